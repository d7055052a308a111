"""Example workflows: import them as ``examples.<name>:workflow`` (``atomr run``)
or run each file as a script (``python examples/order_pipeline.py``)."""
