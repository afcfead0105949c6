"use client";
import { useState } from "react";
import { authClient } from "@/lib/auth-client";
import { forgetApiToken } from "@/lib/task-api";

export function SignOutButton() {
  const [busy, setBusy] = useState(false);
  return (
    <button
      type="button"
      className="secondary"
      disabled={busy}
      onClick={async () => {
        setBusy(true);
        await authClient.signOut();
        // Signing out ends the Better Auth session but does not revoke JWTs already issued:
        // drop the cached one so this tab stops using it.
        forgetApiToken();
        window.location.assign("/sign-in");
      }}
    >
      Sign out
    </button>
  );
}
