// Where the page gets its tokens. Any endpoint that speaks LiveKit's standard token contract works:
// `?tokenEndpoint=https://other.example/api/token` at run time, or VITE_TOKEN_ENDPOINT at build time.
export interface PageConfig {
  tokenEndpoint: string;
  agentName?: string;
}

export function readConfig(search: string, env: Record<string, string | undefined> = {}): PageConfig {
  const params = new URLSearchParams(search);
  return {
    tokenEndpoint: params.get("tokenEndpoint") || env.VITE_TOKEN_ENDPOINT || "/api/token",
    agentName: params.get("agent") || env.VITE_AGENT_NAME || undefined,
  };
}
