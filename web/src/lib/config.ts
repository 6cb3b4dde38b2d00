// Where the page gets its tokens. Any endpoint that speaks LiveKit's standard token contract works:
// `?tokenEndpoint=https://other.example/api/token` at run time, or VITE_TOKEN_ENDPOINT at build time.
// `?room=kitchen&name=Ana` joins a shared room (a group call with the agent) under that display name.
export interface PageConfig {
  tokenEndpoint: string;
  agentName?: string;
  roomName?: string;
  participantName?: string;
}

export function readConfig(search: string, env: Record<string, string | undefined> = {}): PageConfig {
  const params = new URLSearchParams(search);
  return {
    tokenEndpoint: params.get("tokenEndpoint") || env.VITE_TOKEN_ENDPOINT || "/api/token",
    agentName: params.get("agent") || env.VITE_AGENT_NAME || undefined,
    ...(params.get("room") ? { roomName: params.get("room") as string } : {}),
    ...(params.get("name") ? { participantName: params.get("name") as string } : {}),
  };
}
