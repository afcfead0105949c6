// What a frontend writes against the generated types (openapi-typescript 7 + openapi-fetch, both
// at their default options). tests/api/platform/test_typed_contract.py generates `./api.ts` from
// the app's /openapi.json next to a copy of this file and runs `tsc --noEmit --strict` on it:
// no casts, no `any`, no choosing a media type. If the schema stops describing an answer
// precisely, this stops compiling.
import createClient from "openapi-fetch";
import type { components, paths } from "./api";

type Schemas = components["schemas"];
type StreamEvent = Schemas["ChatStreamEvent"];

const client = createClient<paths>({ baseUrl: "http://127.0.0.1:8000" });
const auth = { headers: { Authorization: "Bearer token" } };

export async function chat(): Promise<string> {
  // `stream` has a default: the request type must not demand it.
  const { data, error } = await client.POST("/api/chat", {
    body: { message: "add milk" },
    ...auth,
  });
  if (error) return `${error.code}: ${error.detail}`;
  const conversation: string = data.conversation_id;
  const reply: string = data.response;
  const firstTool: string | undefined = data.tool_calls[0]?.tool;
  const interrupted: boolean = data.interrupted;
  // Continue the conversation, with an idempotency key.
  await client.POST("/api/chat", {
    body: { message: "and eggs", conversation_id: conversation },
    params: { header: { "Idempotency-Key": "k1" } },
    ...auth,
  });
  return `${reply} ${firstTool ?? "-"} ${interrupted}`;
}

export async function tasks(): Promise<string | undefined> {
  const { data } = await client.GET("/api/tasks", { params: { query: { limit: 10 } }, ...auth });
  const first: string | undefined = data?.tasks[0]?.title;
  const next: number | null | undefined = data?.next_cursor;
  return `${first} ${next}`;
}

/** Reads one streamed event: the union is narrowed by `type`, nothing else. */
export function describe(event: StreamEvent): string {
  switch (event.type) {
    case "conversation":
      return event.conversation_id;
    case "text.delta": {
      const delta: Schemas["TextDeltaEvent"]["delta"] = event.delta;
      return delta;
    }
    case "tool_call":
      return `${event.tool}(${JSON.stringify(event.arguments)})`;
    case "tool_result":
      return `${event.tool} -> ${JSON.stringify(event.result)}`;
    case "done":
      return `${event.response} ${event.message_id} ${event.tool_calls.length} ${event.interrupted}`;
    case "error": {
      const retry: number | undefined = event.retry_after;
      const recorded: string | undefined = event.interrupted?.response;
      return `${event.status} ${event.code} ${event.detail} ${retry} ${recorded}`;
    }
    default: {
      const unknown: never = event; // every event type is handled above
      return unknown;
    }
  }
}

/** The streaming operation: its request type is the chat request, its body the event stream. */
export async function stream(): Promise<void> {
  const { response } = await client.POST("/api/chat/stream", {
    body: { message: "add milk" },
    parseAs: "stream",
    ...auth,
  });
  const reader = response.body?.pipeThrough(new TextDecoderStream()).getReader();
  const chunk = await reader?.read();
  for (const line of (chunk?.value ?? "").split("\n")) {
    if (!line.startsWith("data: ")) continue;
    const event: StreamEvent = JSON.parse(line.slice(6));
    describe(event);
  }
}

export async function chatkit(): Promise<string[]> {
  // A ChatKit request needs only its type and the params without defaults.
  const { data } = await client.POST("/api/chatkit", {
    body: { type: "threads.list", params: { limit: 20 } },
    ...auth,
  });
  const titles: string[] = [];
  if (data && "has_more" in data) {
    for (const entry of data.data) {
      if ("items" in entry) titles.push(`${entry.id} ${entry.title ?? "(untitled)"}`);
    }
  }
  const { data: thread } = await client.POST("/api/chatkit", {
    body: { type: "threads.get_by_id", params: { thread_id: "thr_1" } },
    ...auth,
  });
  if (thread && "items" in thread) {
    const page = thread.items;
    titles.push(`${thread.created_at} ${page.has_more} ${page.data[0]?.type}`);
  }
  return titles;
}
