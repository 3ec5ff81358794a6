"""Every parameter of every deployed flow is described for the operator (the Prefect UI's run form).

Prefect builds a flow's parameter schema (``flow.parameters``, sent as the deployment's
``parameter_openapi_schema`` by ``prefect deploy``) from the signature and the ``Args:`` section
of the flow function's Google-style docstring; a parameter missing there has no description in
the UI. The slow e2e test ``tests/e2e/test_worker_cancel.py`` checks the deployed schemas too.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

import pytest

from tests.e2e.prefect_server import prefect_yaml_deployments


def _flow(entrypoint: str) -> Any:
    path, name = entrypoint.rsplit(":", 1)
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def _problems(parameters: Any, signature: inspect.Signature) -> list[str]:
    """What is wrong with the descriptions of ``parameters`` (a ParameterSchema)."""
    problems = []
    for name, param in signature.parameters.items():
        prop = parameters.properties.get(name)
        if prop is None:
            problems.append(f"{name}: not in the schema")
            continue
        text = str(prop.get("description") or "").strip()
        if not text:
            problems.append(f"{name}: no description")
        elif param.default is not inspect.Parameter.empty and "default" not in text.lower():
            problems.append(f"{name}: the description does not say the default")
    return problems


DEPLOYMENTS = prefect_yaml_deployments()


@pytest.mark.parametrize("entrypoint", sorted(set(DEPLOYMENTS.values())))
def test_every_parameter_of_a_deployed_flow_has_a_description(entrypoint: str) -> None:
    flow = _flow(entrypoint)
    assert not _problems(flow.parameters, inspect.signature(flow.fn)), entrypoint


def test_the_check_fails_when_a_parameter_loses_its_description() -> None:
    from prefect.utilities.callables import parameter_schema

    load_data = _flow(DEPLOYMENTS["load-data"]).fn
    docstring = inspect.getdoc(load_data) or ""
    # Drop the `seed:` entry and its continuation lines from the Args section.
    without_seed = re.sub(r"\n    seed: .*?(?=\n    \w+: )", "", docstring, flags=re.S)
    assert without_seed != docstring

    def copy(*args: Any, **kwargs: Any) -> None: ...

    copy.__signature__ = inspect.signature(load_data)  # type: ignore[attr-defined]
    copy.__doc__ = without_seed
    assert _problems(parameter_schema(copy), inspect.signature(load_data)) == [
        "seed: no description"
    ]
