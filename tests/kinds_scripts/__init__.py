"""Scripts run in a subprocess by the step-kind tests (killed with SIGKILL mid-run)."""
