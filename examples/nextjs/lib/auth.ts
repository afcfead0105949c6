// The Better Auth server: email + password, sessions in PostgreSQL, and the jwt plugin whose
// tokens (EdDSA, published at /api/auth/jwks) the task API verifies.
import { betterAuth } from "better-auth";
import { jwt } from "better-auth/plugins";
import { PHASE_PRODUCTION_BUILD } from "next/constants";
import { Pool } from "pg";

/** The public origin of this app. The tokens' `iss` and `aud` are this origin, so the task
 * API's BETTER_AUTH_URL must be the same string. Fixed here rather than taken from each
 * request's Host, so every token carries the same claims. */
export const BETTER_AUTH_URL = process.env.BETTER_AUTH_URL ?? "http://localhost:3000";

export const auth = betterAuth({
  baseURL: BETTER_AUTH_URL,
  // Set BETTER_AUTH_SECRET at run time (`openssl rand -base64 32`); Better Auth refuses to serve
  // without it in production. `next build` loads this module too, where no secret is needed.
  secret:
    process.env.BETTER_AUTH_SECRET ??
    (process.env.NEXT_PHASE === PHASE_PRODUCTION_BUILD ? "build-time-placeholder-never-serves-a-request" : undefined),
  database: new Pool({
    connectionString: process.env.DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/task_assistant_auth",
  }),
  emailAndPassword: { enabled: true },
  plugins: [
    jwt({
      // The task API reads only `sub`; keep the token small instead of carrying the user row.
      jwt: { definePayload: ({ user }) => ({ email: user.email, name: user.name }) },
    }),
  ],
});
