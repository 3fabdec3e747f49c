"""schemathesis over every public operation of the published OpenAPI, against the real stack.

Whatever it generates (valid, boundary and invalid requests), the server must answer without a 5xx, in
OpenAI's error envelope when it refuses, with a status, content type, headers and body the OpenAPI
publishes, and reject every request the schema forbids. Bounded for CI: a fixed seed (the same cases
every run), a few examples per operation, no shrinking; tests/fuzz/hooks.py keeps LLM and diffusion calls
short. Model load/unload are fuzzed against a Triton of their own with an empty repository, so that no
generated request can unload a model of the session's server.
"""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from frontend.app import create_app
from frontend.settings import Settings
from launcher.triton import TritonServer
from tests.conftest import TRITON_API_SECRET
from tests.fuzz import hooks  # noqa: F401 - registers the hooks and the envelope check
from tests.stack import run_frontend

pytestmark = pytest.mark.integration

ADMIN_CONTROL = r"^/admin/models/(load|unload)$"
CONFIG = {
    "seed": 20261130,
    "generation": {"max-examples": 50, "no-shrink": True, "deterministic": True, "database": "none"},
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
               "stateful": {"enabled": False}},
    "suppress-health-check": ["all"],
    "request-timeout": 60,
    "output": {"sanitization": {"enabled": False}},  # show max_tokens: the default hides fields named *token*
}
# A schema-valid request may still be refused for a reason no JSON schema can say (`top_logprobs` without
# `logprobs`, `best_of` != `n`, a prompt over the model's context): 400 is right there, not a failure.
EXCLUDED_CHECKS = [positive_data_acceptance]
# A form carries every value as text, so a "negative" case that breaks a field's type (`"2"` for an integer) is
# the very bytes of a valid request, which the server rightly takes: for multipart bodies the rejection check
# can only misfire. Their refusals are tested one by one in tests/api/test_images_edits.py.
FORM_EXCLUDED_CHECKS = [*EXCLUDED_CHECKS, negative_data_rejection]


# The document the frontend publishes at /openapi.json, built from the same app code without a server: the
# schema must exist when pytest collects the tests (schemathesis' fixture-based loader breaks on pytest 9.2:
# it sets `node._nodeid`). test_published_schema checks that the running frontend serves this document.
PUBLISHED = create_app(Settings()).openapi()
SCHEMA = schemathesis.openapi.from_dict(PUBLISHED, config=schemathesis.Config.from_dict(CONFIG))


@pytest.fixture(scope="module")
def control_url(tmp_path_factory):
    """A frontend over a tritonserver of its own whose repository is empty: nothing to load or unload."""
    empty = tmp_path_factory.mktemp("empty_repository")
    with TritonServer(empty, [], api_secret=TRITON_API_SECRET) as triton:
        settings = Settings(triton_grpc_url=triton.grpc_url, triton_api_secret=TRITON_API_SECRET, admin_wait_s=10)
        with run_frontend(settings) as frontend:
            yield frontend.url


def test_published_schema(http):
    assert http.get("/openapi.json").json() == PUBLISHED


@SCHEMA.exclude(path_regex=ADMIN_CONTROL).parametrize()
def test_public_operations(case, frontend):
    form = case.media_type == "multipart/form-data"
    case.call_and_validate(base_url=frontend.url, excluded_checks=FORM_EXCLUDED_CHECKS if form else EXCLUDED_CHECKS)


@SCHEMA.include(path_regex=ADMIN_CONTROL).parametrize()
def test_model_control(case, control_url):
    case.call_and_validate(base_url=control_url, excluded_checks=EXCLUDED_CHECKS)
