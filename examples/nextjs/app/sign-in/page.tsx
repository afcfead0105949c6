import { redirect } from "next/navigation";
import { AuthForm } from "@/components/auth-form";
import { getSession } from "@/lib/session";

export const dynamic = "force-dynamic";

export default async function SignInPage() {
  if (await getSession()) redirect("/");
  return (
    <main className="auth-page">
      <AuthForm />
    </main>
  );
}
