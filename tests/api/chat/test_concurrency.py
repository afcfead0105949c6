"""Many users at once: turns of different users never see each other's data."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from backend.auth.devkeys import load_or_create_dev_key, mint_token
from backend.main import create_app
from tests.support.app import make_settings, running_app
from tests.support.rule_model import RuleModel

USERS = 50
TASKS_EACH = 3


async def test_fifty_concurrent_users_stay_isolated(database_url: str, data_dir: Path) -> None:
    key = load_or_create_dev_key(data_dir)
    headers = {
        f"user-{i}": {"Authorization": f"Bearer {mint_token(key, f'user-{i}')}"}
        for i in range(USERS)
    }
    model = RuleModel()
    settings = make_settings(database_url, data_dir, rate_limit_requests=0, database_pool_size=10)
    async with running_app(create_app(settings, model=model)) as client:
        # a victim task every attacker will try to reach by id: user-0's task 4 (numbers are per
        # user: 1 to 3 go, so that no attacker holds a task 4 of their own)
        for _ in range(TASKS_EACH):
            r = await client.post("/api/tasks", json={"title": "gone"}, headers=headers["user-0"])
            await client.delete(f"/api/tasks/{r.json()['id']}", headers=headers["user-0"])
        victim = (
            await client.post("/api/tasks", json={"title": "victim"}, headers=headers["user-0"])
        ).json()
        assert victim["id"] == TASKS_EACH + 1

        async def user_session(user: str) -> tuple[str, list[str], list[object]]:
            conversation = None
            sent = []
            for n in range(TASKS_EACH):
                title = f"{user} task {n}"
                body = {"message": f"add {title}", "conversation_id": conversation}
                r = await client.post("/api/chat", json=body, headers=headers[user])
                assert r.status_code == 200, r.text
                conversation = r.json()["conversation_id"]
                sent.append(title)
                await asyncio.sleep(random.random() / 100)
            steal_results: list[object] = []
            if user != "user-0":  # everyone else tries to complete and delete user-0's task by id
                r = await client.post(
                    "/api/chat",
                    json={"message": f"steal {victim['id']}", "conversation_id": conversation},
                    headers=headers[user],
                )
                steal_results = [c["result"] for c in r.json()["tool_calls"]]
            r = await client.post(
                "/api/chat",
                json={"message": "list", "conversation_id": conversation},
                headers=headers[user],
            )
            listed = [t["title"] for t in r.json()["tool_calls"][0]["result"]["tasks"]]
            assert listed == (["victim"] if user == "user-0" else []) + sent
            return user, sent, steal_results

        results = await asyncio.gather(*(user_session(u) for u in headers))

        for user, sent, steal_results in results:
            tasks = (await client.get("/api/tasks", headers=headers[user])).json()["tasks"]
            titles = [t["title"] for t in tasks if t["title"] != "victim"]
            assert titles == sent, user
            if user != "user-0":
                assert steal_results == [{"error": f"Task {victim['id']} not found"}] * 2
        # the victim task survived every attempt, untouched
        r = await client.get(f"/api/tasks/{victim['id']}", headers=headers["user-0"])
        assert r.status_code == 200 and r.json()["completed"] is False
        # every user sees only their own conversation, with only their own messages
        for user in ("user-7", "user-33"):
            convs = (await client.get("/api/conversations", headers=headers[user])).json()[
                "conversations"
            ]
            assert len(convs) == 1
            detail = (
                await client.get(f"/api/conversations/{convs[0]['id']}", headers=headers[user])
            ).json()
            user_messages = [m["content"] for m in detail["messages"] if m["role"] == "user"]
            assert user_messages == [f"add {user} task {n}" for n in range(TASKS_EACH)] + [
                f"steal {victim['id']}",
                "list",
            ]
