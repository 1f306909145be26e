"""How-to: test your client against mockgen with the pytest plugin (the README's example, verbatim)."""

import httpx
import pytest


@pytest.mark.mockgen(scenario="ci")
def test_a_failed_task_is_refunded(mockgen):
    auth = mockgen.headers()  # {"Authorization": "Bearer sk-..."} with a ready key
    body = {"model_id": "gpt-image-2", "prompt": "a lighthouse [fail]"}
    task = httpx.post(mockgen.url("/api/v1/tasks/create"), json=body, headers=auth).json()["data"]
    assert mockgen.balance() == 1000 - task["credits"]
    mockgen.advance(10)  # the manual clock moves: the task fails and is refunded, nothing sleeps
    polled = httpx.get(mockgen.url(f"/api/v1/tasks/{task['task_id']}"), headers=auth).json()
    assert polled["data"]["task_status"] == 4 and mockgen.balance() == 1000
    mockgen.verify("POST /api/v1/tasks/create", count=1, body={"model_id": "gpt-image-2"})
