// Everything in app/(app) is for signed-in users: the session is checked on the server and a
// signed-out visitor is redirected to /sign-in before anything renders.
import Link from "next/link";
import type { ReactNode } from "react";
import { ApiUrlProvider } from "@/components/api-url";
import { SignOutButton } from "@/components/sign-out-button";
import { requireSession, taskApiUrl } from "@/lib/session";

export const dynamic = "force-dynamic";

export default async function AppLayout({ children }: { children: ReactNode }) {
  const { user } = await requireSession();
  return (
    <ApiUrlProvider value={taskApiUrl()}>
      <header className="topbar">
        <strong className="brand">Task assistant</strong>
        <nav aria-label="Main">
          <Link href="/">Tasks &amp; chat</Link>
          <Link href="/chatkit">ChatKit</Link>
        </nav>
        <span className="who" title={user.email}>
          {user.name || user.email}
        </span>
        <SignOutButton />
      </header>
      <main>{children}</main>
    </ApiUrlProvider>
  );
}
