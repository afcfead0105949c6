// The browser side of Better Auth. `jwtClient()` adds `authClient.token()`, which returns a
// short-lived JWT (15 minutes) for the task API.
import { createAuthClient } from "better-auth/react";
import { jwtClient } from "better-auth/client/plugins";

export const authClient = createAuthClient({ plugins: [jwtClient()] });
