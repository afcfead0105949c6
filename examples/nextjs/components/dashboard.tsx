"use client";
// The signed-in page: the task list (GET /api/tasks), a chat whose reply renders as it streams in
// (POST /api/chat with "stream": true), and the conversations (GET /api/conversations).
import { useCallback, useEffect, useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import { useApiUrl } from "@/components/api-url";
import {
  apiFetch,
  apiGet,
  errorText,
  readEvents,
  type Conversation,
  type StoredMessage,
  type Task,
} from "@/lib/task-api";

type Chip = { tool: string; arguments: Record<string, unknown>; result?: unknown };

type UiMessage = {
  key: string;
  role: string;
  text: string;
  tools: Chip[];
  streaming?: boolean;
  error?: string;
};

function newKey(): string {
  return typeof crypto.randomUUID === "function"
    ? crypto.randomUUID()
    : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function describe(value: unknown): string {
  if (value === undefined) return "";
  const text = JSON.stringify(value);
  return text.length > 120 ? `${text.slice(0, 117)}…` : text;
}

export function Dashboard() {
  const apiUrl = useApiUrl();

  const [tasks, setTasks] = useState<Task[] | null>(null);
  const [tasksError, setTasksError] = useState<string | null>(null);
  const [conversations, setConversations] = useState<Conversation[] | null>(null);
  const [conversationsError, setConversationsError] = useState<string | null>(null);
  const [conversationId, setConversationId] = useState<string | null>(null);
  const [messages, setMessages] = useState<UiMessage[]>([]);
  const [draft, setDraft] = useState("");
  const [sending, setSending] = useState(false);
  const logRef = useRef<HTMLOListElement>(null);

  const loadTasks = useCallback(async () => {
    try {
      const all: Task[] = [];
      let after: number | null = null;
      do {
        const query: string = `status=all&limit=200${after === null ? "" : `&after=${after}`}`;
        const page: { tasks: Task[]; next_cursor: number | null } = await apiGet(`${apiUrl}/api/tasks?${query}`);
        all.push(...page.tasks);
        after = page.next_cursor;
      } while (after !== null);
      setTasks(all);
      setTasksError(null);
    } catch (error) {
      setTasksError(message(error));
    }
  }, [apiUrl]);

  const loadConversations = useCallback(async () => {
    try {
      const page = await apiGet<{ conversations: Conversation[] }>(`${apiUrl}/api/conversations?limit=50`);
      setConversations(page.conversations);
      setConversationsError(null);
    } catch (error) {
      setConversationsError(message(error));
    }
  }, [apiUrl]);

  useEffect(() => {
    void loadTasks();
    void loadConversations();
  }, [loadTasks, loadConversations]);

  useEffect(() => {
    logRef.current?.lastElementChild?.scrollIntoView({ block: "end" });
  }, [messages]);

  async function openConversation(id: string) {
    if (sending) return;
    try {
      const loaded: UiMessage[] = [];
      let after: number | null = null;
      do {
        const query: string = `limit=200${after === null ? "" : `&after=${after}`}`;
        const page: { messages: StoredMessage[]; next_cursor: number | null } = await apiGet(
          `${apiUrl}/api/conversations/${id}?${query}`,
        );
        for (const m of page.messages) {
          loaded.push({ key: newKey(), role: m.role, text: m.content, tools: m.tool_calls ?? [] });
        }
        after = page.next_cursor;
      } while (after !== null);
      setConversationId(id);
      setMessages(loaded);
    } catch (error) {
      setConversationsError(message(error));
    }
  }

  function newConversation() {
    if (sending) return;
    setConversationId(null);
    setMessages([]);
  }

  async function send(event?: FormEvent) {
    event?.preventDefault();
    const text = draft.trim();
    if (!text || sending) return;
    const reply = newKey();
    setDraft("");
    setSending(true);
    setMessages((ms) => [
      ...ms,
      { key: newKey(), role: "user", text, tools: [] },
      { key: reply, role: "assistant", text: "", tools: [], streaming: true },
    ]);
    const update = (change: (m: UiMessage) => UiMessage) =>
      setMessages((ms) => ms.map((m) => (m.key === reply ? change(m) : m)));

    try {
      const response = await apiFetch(`${apiUrl}/api/chat`, {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          Accept: "text/event-stream",
          // A retry of this exact message (the 401 retry included) is answered at most once.
          "Idempotency-Key": newKey(),
        },
        body: JSON.stringify({ message: text, conversation_id: conversationId ?? undefined, stream: true }),
      });
      if (!response.ok) throw new Error(await errorText(response));
      await readEvents(response, (ev) => {
        switch (ev.type) {
          case "conversation":
            setConversationId(ev.conversation_id);
            break;
          case "text.delta":
            update((m) => ({ ...m, text: m.text + ev.delta }));
            break;
          case "tool_call":
            update((m) => ({ ...m, tools: [...m.tools, { tool: ev.tool, arguments: ev.arguments }] }));
            break;
          case "tool_result": {
            update((m) => {
              const i = m.tools.findIndex((t) => t.tool === ev.tool && t.result === undefined);
              if (i < 0) return m;
              const tools = m.tools.slice();
              tools[i] = { ...tools[i]!, result: ev.result };
              return { ...m, tools };
            });
            void loadTasks(); // a tool changed (or read) the tasks: show the list as it is now
            break;
          }
          case "done":
            update((m) => ({ ...m, text: ev.response, tools: ev.tool_calls, streaming: false }));
            break;
          case "error":
            update((m) => ({ ...m, error: ev.detail, streaming: false }));
            break;
        }
      });
    } catch (error) {
      update((m) => ({ ...m, error: message(error) }));
    } finally {
      update((m) => ({ ...m, streaming: false }));
      setSending(false);
      void loadConversations();
    }
  }

  function onKeyDown(event: KeyboardEvent<HTMLTextAreaElement>) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      void send();
    }
  }

  return (
    <div className="dashboard">
      <section className="panel conversations" aria-labelledby="conversations-heading">
        <div className="panel-head">
          <h2 id="conversations-heading">Conversations</h2>
          <button type="button" className="secondary" onClick={newConversation} disabled={sending}>
            New
          </button>
        </div>
        {conversationsError && <p className="error">{conversationsError}</p>}
        {conversations === null ? (
          <p className="hint">Loading…</p>
        ) : conversations.length === 0 ? (
          <p className="hint">No conversations yet.</p>
        ) : (
          <ul aria-label="Conversations">
            {conversations.map((c) => (
              <li key={c.id}>
                <button
                  type="button"
                  className={c.id === conversationId ? "conversation active" : "conversation"}
                  onClick={() => void openConversation(c.id)}
                >
                  {c.title || "Untitled"}
                  <small>{new Date(c.updated_at).toLocaleString()}</small>
                </button>
              </li>
            ))}
          </ul>
        )}
      </section>

      <section className="panel chat" aria-labelledby="chat-heading">
        <h2 id="chat-heading">Chat</h2>
        <ol className="messages" aria-label="Messages" aria-live="polite" ref={logRef}>
          {messages.length === 0 && (
            <li className="hint">Try “add a task to buy milk”, “show my tasks” or “mark the milk task as done”.</li>
          )}
          {messages.map((m) => (
            <li key={m.key} className={`message ${m.role}`} aria-busy={m.streaming ? true : undefined}>
              {m.tools.length > 0 && (
                <ul className="tools" aria-label="Tool calls">
                  {m.tools.map((t, i) => (
                    <li key={i} className="tool" title={describe(t.result)}>
                      <code>{t.tool}</code> {describe(t.arguments)}
                      {t.result === undefined ? " …" : " ✓"}
                    </li>
                  ))}
                </ul>
              )}
              {m.text && <p className="text">{m.text}</p>}
              {m.streaming && !m.text && <p className="hint">…</p>}
              {m.error && (
                <p role="alert" className="error">
                  {m.error}
                </p>
              )}
            </li>
          ))}
        </ol>
        <form className="composer" onSubmit={send}>
          <label htmlFor="message" className="visually-hidden">
            Message
          </label>
          <textarea
            id="message"
            value={draft}
            onChange={(e) => setDraft(e.target.value)}
            onKeyDown={onKeyDown}
            placeholder="Ask the assistant to add, list, complete, rename or delete tasks…"
            rows={2}
          />
          <button type="submit" disabled={sending || !draft.trim()}>
            {sending ? "Sending…" : "Send"}
          </button>
        </form>
      </section>

      <section className="panel tasks" aria-labelledby="tasks-heading">
        <div className="panel-head">
          <h2 id="tasks-heading">Tasks</h2>
          <button type="button" className="secondary" onClick={() => void loadTasks()}>
            Refresh
          </button>
        </div>
        {tasksError && <p className="error">{tasksError}</p>}
        {tasks === null ? (
          <p className="hint">Loading…</p>
        ) : tasks.length === 0 ? (
          <p className="hint">No tasks yet.</p>
        ) : (
          <ul aria-label="Tasks">
            {tasks.map((t) => (
              <li key={t.id} className={t.completed ? "task done" : "task"}>
                <span className="check" aria-hidden="true">
                  {t.completed ? "☑" : "☐"}
                </span>
                <span className="title">{t.title}</span>
                <span className="visually-hidden">{t.completed ? " (done)" : " (pending)"}</span>
              </li>
            ))}
          </ul>
        )}
      </section>
    </div>
  );
}
