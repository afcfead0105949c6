"use client";
// OpenAI ChatKit against the task API's /api/chatkit. Every ChatKit request goes through
// `apiFetch`, which adds the Better Auth JWT and retries once on 401.
import { ChatKit, useChatKit } from "@openai/chatkit-react";
import { useEffect, useState } from "react";
import { useApiUrl } from "@/components/api-url";
import { apiFetch } from "@/lib/task-api";

export function TaskChatKit() {
  const apiUrl = useApiUrl();
  const [missing, setMissing] = useState(false);
  const { control } = useChatKit({
    api: {
      url: `${apiUrl}/api/chatkit`,
      // From OpenAI's domain allow-list; OpenAI's samples use this placeholder on localhost.
      domainKey: process.env.NEXT_PUBLIC_CHATKIT_DOMAIN_KEY ?? "domain_pk_localhost_dev",
      fetch: apiFetch,
    },
    // No attachments: the task API refuses them.
    composer: { placeholder: "Add, list, complete, update or delete tasks…" },
    onError: ({ error }) => console.error("ChatKit error", error),
  });

  // The <openai-chatkit> element is defined by OpenAI's CDN script; say so when it never arrives.
  useEffect(() => {
    let defined = false;
    void customElements.whenDefined("openai-chatkit").then(() => {
      defined = true;
      setMissing(false);
    });
    const timer = window.setTimeout(() => setMissing(!defined), 8000);
    return () => window.clearTimeout(timer);
  }, []);

  return (
    <>
      {missing && (
        <p role="status" className="error">
          The ChatKit component has not loaded: it comes from OpenAI&apos;s CDN
          (cdn.platform.openai.com), which this browser cannot reach.
        </p>
      )}
      <ChatKit control={control} className="chatkit" />
    </>
  );
}
