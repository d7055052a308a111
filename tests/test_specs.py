"""MODULE:WORKFLOW specs: the one loader of the CLI and the shard processes."""

from __future__ import annotations

import sys
import textwrap

import pytest

from atomr import Workflow
from atomr._specs import WorkflowSpecError, load_workflow, split_spec
from atomr.cli import CliError
from atomr.cli import load_workflow as cli_load_workflow
from atomr.errors import AtomrError
from atomr.sharding import load_workflow as shard_load_workflow

MODULE = """
    from atomr import Dag, LastWriteWins, StateSchema, Workflow

    def _step(state, ctx):
        return {"n": state["n"] + 1}

    def make():
        return Workflow("specs", Dag.builder("s").step("s", _step).build(),
                        StateSchema({"n": (LastWriteWins(), 0)}))

    workflow = make()

    class Holder:
        inner = workflow

    not_a_workflow = 42

    def not_a_factory():
        return "nope"
"""


@pytest.fixture
def specmod(tmp_path, monkeypatch):
    (tmp_path / "specmod.py").write_text(textwrap.dedent(MODULE), encoding="utf-8")
    (tmp_path / "brokenmod.py").write_text("import no_such_dependency_xyz\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "specmod"
    for name in ("specmod", "brokenmod"):
        sys.modules.pop(name, None)


def test_workflow_factory_and_dotted_attribute(specmod):
    wf = load_workflow("specmod:workflow")
    assert isinstance(wf, Workflow) and wf.id == "specs"
    assert load_workflow("specmod:make").id == "specs"
    assert load_workflow("specmod:Holder.inner") is wf


@pytest.mark.parametrize("spec", ["specmod", "specmod:", ":workflow", "", None, 42])
def test_malformed_specs(spec):
    with pytest.raises(WorkflowSpecError, match="expected MODULE:WORKFLOW"):
        split_spec(spec)
    with pytest.raises(WorkflowSpecError):
        load_workflow(spec)  # type: ignore[arg-type]


def test_errors_name_what_is_wrong(specmod):
    with pytest.raises(WorkflowSpecError, match="no module named 'nowhere_xyz'; look there") as info:
        load_workflow("nowhere_xyz.sub:workflow", hint="look there")
    assert isinstance(info.value, AtomrError)
    with pytest.raises(WorkflowSpecError, match="has no attribute 'missing'; workflows defined there: workflow"):
        load_workflow("specmod:missing")
    with pytest.raises(WorkflowSpecError, match="is a int, not a Workflow"):
        load_workflow("specmod:not_a_workflow")
    with pytest.raises(WorkflowSpecError, match=r"not_a_factory\(\) returned a str"):
        load_workflow("specmod:not_a_factory")


def test_an_error_inside_the_module_is_its_own(specmod):
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        load_workflow("brokenmod:workflow")


def test_the_cli_and_the_shards_use_it_with_their_own_hint(specmod):
    assert cli_load_workflow("specmod:workflow").id == "specs"
    assert shard_load_workflow("specmod:make").id == "specs"
    with pytest.raises(WorkflowSpecError, match="run atomr from the directory"):
        cli_load_workflow("nowhere_xyz:workflow")
    with pytest.raises(WorkflowSpecError, match="importable in every shard process"):
        shard_load_workflow("nowhere_xyz:workflow")
    assert issubclass(CliError, AtomrError) and not issubclass(WorkflowSpecError, CliError)
