import Script from "next/script";
import { TaskChatKit } from "@/components/task-chatkit";
import { requireSession } from "@/lib/session";

export default async function ChatKitPage() {
  await requireSession();
  return (
    <section className="panel chatkit-page">
      {/* Defines the <openai-chatkit> element that @openai/chatkit-react renders. It is served only
          by OpenAI's CDN, so this page needs internet access in the browser. */}
      <Script src="https://cdn.platform.openai.com/deployments/chatkit/chatkit.js" strategy="afterInteractive" />
      <h1>ChatKit</h1>
      <p className="hint">
        OpenAI&apos;s ChatKit component, talking to the task API&apos;s <code>/api/chatkit</code> with your
        Better Auth token. Its threads are the same conversations as on the chat page.
      </p>
      <TaskChatKit />
    </section>
  );
}
