"""A deterministic, stateless test model for concurrent runs: its next step depends only on its input.

"add <title>" → add_task(title) → after the output, "added #<id>". "list" → list_tasks → the
titles. "steal <id>" → complete_task(id) + delete_task(id) → the results. Anything else: "ok".
"""

from __future__ import annotations

import json
from typing import Any

from agents import Model, ModelResponse, Usage
from agents.testing import assistant_message, function_call


class RuleModel(Model):
    def __init__(self) -> None:
        self.calls = 0

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        self.calls += 1
        items = input if isinstance(input, list) else [{"role": "user", "content": input}]
        last = items[-1]
        if last.get("type") == "function_call_output":
            outputs = []
            for item in reversed(items):
                if item.get("type") != "function_call_output":
                    break
                outputs.insert(0, json.loads(item["output"]))
            return self._respond([assistant_message(json.dumps(outputs))])
        text = str(last.get("content", ""))
        n = len(items)
        if text.startswith("add "):
            return self._respond([function_call("add_task", {"title": text[4:]}, call_id=f"c{n}")])
        if text == "list":
            return self._respond([function_call("list_tasks", {}, call_id=f"c{n}")])
        if text.startswith("steal "):
            task_id = int(text[6:])
            return self._respond(
                [
                    function_call("complete_task", {"task_id": task_id}, call_id=f"c{n}a"),
                    function_call("delete_task", {"task_id": task_id}, call_id=f"c{n}b"),
                ]
            )
        return self._respond([assistant_message("ok")])

    @staticmethod
    def _respond(output: list[Any]) -> ModelResponse:
        return ModelResponse(output=output, usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("RuleModel is for non-streaming turns")
