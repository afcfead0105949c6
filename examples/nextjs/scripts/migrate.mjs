// Creates (or completes) Better Auth's tables in DATABASE_URL: user, session, account,
// verification, and the jwt plugin's jwks.
//
// Better Auth's own CLI (`npx auth migrate`, npm package `auth` 1.7) requires Node >= 22.12, so
// this script uses the same programmatic migration the CLI runs, `getMigrations`, which works
// on Node 20. The options below must list the same plugins as lib/auth.ts: the plugins decide
// which tables and columns exist (jwt adds `jwks`). Safe to run again: it only adds what is
// missing.
import nextEnv from "@next/env";
import { getMigrations } from "better-auth/db/migration";
import { jwt } from "better-auth/plugins";
import pg from "pg";

// The same .env files as `next dev` / `next start` (.env.local, .env, ...); the environment wins.
nextEnv.loadEnvConfig(process.cwd());

const connectionString =
  process.env.DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/task_assistant_auth";
const pool = new pg.Pool({ connectionString });

try {
  const { toBeCreated, toBeAdded, runMigrations } = await getMigrations({
    database: pool,
    emailAndPassword: { enabled: true },
    plugins: [jwt()],
  });
  const tables = toBeCreated.map((t) => t.table);
  const columns = toBeAdded.flatMap((t) => Object.keys(t.fields).map((f) => `${t.table}.${f}`));
  if (tables.length === 0 && columns.length === 0) {
    console.log("Better Auth schema is up to date");
  } else {
    await runMigrations();
    if (tables.length) console.log(`created tables: ${tables.join(", ")}`);
    if (columns.length) console.log(`added columns: ${columns.join(", ")}`);
  }
} finally {
  await pool.end();
}
