"use client";
import { useState, type FormEvent } from "react";
import { authClient } from "@/lib/auth-client";
import { forgetApiToken } from "@/lib/task-api";

export function AuthForm() {
  const [mode, setMode] = useState<"sign-in" | "sign-up">("sign-in");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const signUp = mode === "sign-up";

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const email = String(form.get("email") ?? "");
    const password = String(form.get("password") ?? "");
    setBusy(true);
    setError(null);
    const { error } = signUp
      ? await authClient.signUp.email({ email, password, name: String(form.get("name") ?? "") })
      : await authClient.signIn.email({ email, password });
    if (error) {
      setError(error.message ?? error.statusText ?? "Something went wrong");
      setBusy(false);
      return;
    }
    forgetApiToken(); // a token cached for an earlier user in this tab must not be reused
    window.location.assign("/");
  }

  return (
    <form className="panel auth-form" onSubmit={submit}>
      <h1>{signUp ? "Create an account" : "Sign in"}</h1>
      {signUp && (
        <label>
          Name
          <input name="name" autoComplete="name" required />
        </label>
      )}
      <label>
        Email
        <input name="email" type="email" autoComplete="email" required />
      </label>
      <label>
        Password
        <input
          name="password"
          type="password"
          autoComplete={signUp ? "new-password" : "current-password"}
          minLength={8}
          required
        />
      </label>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      <button type="submit" disabled={busy}>
        {signUp ? "Create account" : "Sign in"}
      </button>
      <p className="hint">
        {signUp ? "Already have an account? " : "New here? "}
        <button
          type="button"
          className="link"
          onClick={() => {
            setMode(signUp ? "sign-in" : "sign-up");
            setError(null);
          }}
        >
          {signUp ? "Sign in" : "Create an account"}
        </button>
      </p>
    </form>
  );
}
