import { Dashboard } from "@/components/dashboard";
import { requireSession } from "@/lib/session";

export default async function HomePage() {
  // Layouts are not re-run on every client-side navigation: each page checks the session too.
  await requireSession();
  return <Dashboard />;
}
