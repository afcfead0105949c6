// Better Auth's endpoints: sign-up, sign-in, sign-out, get-session, token, jwks, ...
import { toNextJsHandler } from "better-auth/next-js";
import { auth } from "@/lib/auth";

export const { GET, POST } = toNextJsHandler(auth);
