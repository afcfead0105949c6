// Talking to the task API from the browser: the Better Auth JWT as a bearer token (cached until a
// minute before it expires, refetched and retried once on 401), and the chat's Server-Sent Events.
import { authClient } from "@/lib/auth-client";

// ---- the token -------------------------------------------------------------------------------

let cached: { token: string; expiresAt: number } | null = null;
let pending: Promise<string> | null = null;

/** The token's `exp` in milliseconds, or 0 when it cannot be read. */
function expiresAt(token: string): number {
  const payload = token.split(".")[1];
  if (!payload) return 0;
  try {
    const claims: unknown = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/")));
    const exp = typeof claims === "object" && claims !== null ? (claims as { exp?: unknown }).exp : undefined;
    return typeof exp === "number" ? exp * 1000 : 0;
  } catch {
    return 0;
  }
}

/** A JWT from Better Auth's jwt plugin (`GET /api/auth/token`); cached until a minute before `exp`. */
async function apiToken(fresh: boolean): Promise<string> {
  if (!fresh && cached && cached.expiresAt - Date.now() > 60_000) return cached.token;
  // Components asking at the same moment share one request.
  pending ??= (async () => {
    try {
      const { data, error } = await authClient.token();
      if (error || !data) throw new Error("Not signed in");
      cached = { token: data.token, expiresAt: expiresAt(data.token) };
      return data.token;
    } finally {
      pending = null;
    }
  })();
  return pending;
}

/** Call at sign-out: a token already issued stays valid at the API until it expires. */
export function forgetApiToken(): void {
  cached = null;
}

/** `fetch` with the user's bearer token; on 401, once more with a fresh token. */
export const apiFetch: typeof fetch = async (input, init) => {
  const send = async (fresh: boolean) => {
    const headers = new Headers(init?.headers);
    headers.set("Authorization", `Bearer ${await apiToken(fresh)}`);
    return fetch(input, { ...init, headers });
  };
  const response = await send(false);
  return response.status === 401 ? send(true) : response;
};

// ---- the API's shapes ------------------------------------------------------------------------

export type Task = {
  id: number;
  title: string;
  description: string | null;
  completed: boolean;
  created_at: string;
  updated_at: string;
};

export type Conversation = { id: string; title: string | null; created_at: string; updated_at: string };

export type ToolCall = { tool: string; arguments: Record<string, unknown>; result?: unknown };

export type StoredMessage = {
  role: "user" | "assistant" | string;
  content: string;
  tool_calls?: ToolCall[] | null;
  created_at: string;
};

/** The events of a streamed chat turn (`POST /api/chat` with `"stream": true`). */
export type ChatEvent =
  | { type: "conversation"; conversation_id: string }
  | { type: "text.delta"; delta: string }
  | { type: "tool_call"; tool: string; arguments: Record<string, unknown> }
  | { type: "tool_result"; tool: string; result: unknown }
  | {
      type: "done";
      conversation_id: string;
      message_id: number;
      response: string;
      tool_calls: ToolCall[];
      interrupted?: boolean;
    }
  | { type: "error"; detail: string; code?: string; status?: number; retry_after?: number };

/** The API's error text (`{"detail": ..., "code": ...}`), or the status line. */
export async function errorText(response: Response): Promise<string> {
  try {
    const body: unknown = await response.json();
    const detail = typeof body === "object" && body !== null ? (body as { detail?: unknown }).detail : undefined;
    if (typeof detail === "string") return `${detail} (${response.status})`;
  } catch {
    // not JSON
  }
  return `The task API answered ${response.status} ${response.statusText}`.trim();
}

/** GET a JSON resource of the API, or throw with its error text. */
export async function apiGet<T>(url: string): Promise<T> {
  const response = await apiFetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(await errorText(response));
  return (await response.json()) as T;
}

/** Reads a `text/event-stream` body event by event, calling `onEvent` as each one arrives. */
export async function readEvents(response: Response, onEvent: (event: ChatEvent) => void): Promise<void> {
  if (!response.body) throw new Error("The response has no body to stream");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  const flush = (block: string) => {
    const data = block
      .split(/\r?\n/)
      .filter((line) => line.startsWith("data:"))
      .map((line) => line.slice(5).replace(/^ /, ""))
      .join("\n");
    if (data) onEvent(JSON.parse(data) as ChatEvent);
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    // Events are separated by a blank line.
    let match: RegExpExecArray | null;
    while ((match = /\r?\n\r?\n/.exec(buffer)) !== null) {
      flush(buffer.slice(0, match.index));
      buffer = buffer.slice(match.index + match[0].length);
    }
  }
  if (buffer.trim()) flush(buffer);
}
