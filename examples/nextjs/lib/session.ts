// Server-side session checks: pages under app/(app) call `requireSession()`, which redirects a
// signed-out visitor to /sign-in before anything is rendered.
import { cache } from "react";
import { headers } from "next/headers";
import { redirect } from "next/navigation";
import { auth } from "@/lib/auth";

export const getSession = cache(async () => auth.api.getSession({ headers: await headers() }));

export async function requireSession() {
  const session = await getSession();
  if (!session) redirect("/sign-in");
  return session;
}

/** Where the browser reaches the task API (the API's `make run` serves http://127.0.0.1:8000). */
export function taskApiUrl(): string {
  return process.env.TASK_API_URL ?? process.env.NEXT_PUBLIC_TASK_API_URL ?? "http://127.0.0.1:8000";
}
