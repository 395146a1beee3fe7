"""The model of GitHub's expressions that the workflow tests evaluate `if:` conditions with."""

from __future__ import annotations

import pytest

from tests.github.expressions import Job, Run, evaluate, job_runs

pytestmark = pytest.mark.unit

RUN = Run(
    needs={"a": Job("success", {"paused": "true", "empty": ""}), "b": Job("skipped")},
    github={"ref": "refs/heads/main"},
    inputs={"stack": "prod"},
)


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        # Loose equality as GitHub documents it: other types compared as numbers, strings without case.
        ("null == 0", True),
        ("null == ''", True),
        ("'' == 0", True),
        ("'1' == 1", True),
        ("true == 1", True),
        ("'abc' == 'ABC'", True),
        ("'abc' == 0", False),
        ("'it''s' == 'IT''S'", True),
        # A missing output, or the outputs of a skipped job, read as null.
        ("needs.a.outputs.paused == 'true'", True),
        ("needs.a.outputs.empty == ''", True),
        ("needs.a.outputs.missing == ''", True),
        ("needs.b.outputs.paused == ''", True),
        ("needs['a'].result", "success"),
        # && and || yield an operand; ! negates truthiness.
        ("inputs.stack == 'prod' && 'production' || 'staging'", "production"),
        ("'' || 'x'", "x"),
        ("!null", True),
        ("!(github.ref == 'refs/heads/main')", False),
        ("contains(github.ref, 'MAIN')", True),
    ],
)
def test_expressions_evaluate_as_github_documents(expression, value):
    assert evaluate(expression, RUN) == value


def test_a_job_if_without_a_status_function_needs_every_job_it_needs_to_succeed():
    assert not job_runs("needs.a.outputs.paused == 'true'", RUN)  # b was skipped
    assert job_runs("always() && needs.a.outputs.paused == 'true'", RUN)
    assert job_runs("${{ needs.a.outputs.paused == 'true' }}", Run(needs={"a": RUN.needs["a"]}))
    cancelled = Run(needs={"a": RUN.needs["a"]}, cancelled=True)
    assert (
        not job_runs(None, cancelled)
        and job_runs("always()", cancelled)
        and job_runs("cancelled()", cancelled)
    )
    assert job_runs("failure()", Run(needs={"a": Job("failure")}))
