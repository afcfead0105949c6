"use client";
// The task API's address, read on the server at request time (TASK_API_URL) and handed to the
// browser components, so one build runs against any API.
import { createContext, useContext, type ReactNode } from "react";

const ApiUrl = createContext<string>("http://127.0.0.1:8000");

export function ApiUrlProvider({ value, children }: { value: string; children: ReactNode }) {
  return <ApiUrl.Provider value={value.replace(/\/+$/, "")}>{children}</ApiUrl.Provider>;
}

export function useApiUrl(): string {
  return useContext(ApiUrl);
}
