// LiveKit's standard token endpoint: POST JSON -> 201 {server_url, participant_token}.
export interface ConnectionDetails {
  serverUrl: string;
  participantToken: string;
}

export type SessionMode = "agent" | "echo";

export class TokenError extends Error {
  constructor(
    message: string,
    readonly kind: "unreachable" | "refused" | "invalid",
  ) {
    super(message);
  }
}

// A named room is a shared one: the agent is asked for group handling (it answers when addressed by name).
export function tokenRequest(
  mode: SessionMode,
  agentName?: string,
  room?: { roomName?: string; participantName?: string },
): Record<string, unknown> {
  const body: Record<string, unknown> = { participant_name: room?.participantName || "Web user" };
  if (room?.roomName) body.room_name = room.roomName;
  const group = mode === "agent" && Boolean(room?.roomName);
  if (mode === "echo" || agentName || group) {
    const agent: Record<string, string> = {};
    if (agentName) agent.agent_name = agentName;
    if (mode === "echo") agent.metadata = JSON.stringify({ mode: "echo" });
    if (group) agent.metadata = JSON.stringify({ mode: "group" });
    body.room_config = { agents: [agent] };
  }
  return body;
}

export async function fetchConnectionDetails(
  endpoint: string,
  body: Record<string, unknown>,
  fetchImpl: typeof fetch = fetch,
): Promise<ConnectionDetails> {
  let response: Response;
  try {
    response = await fetchImpl(endpoint, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch {
    throw new TokenError(`Can't reach the token server (${endpoint}). Is the stack running?`, "unreachable");
  }
  let payload: Record<string, unknown> = {};
  try {
    payload = await response.json();
  } catch {
    // fall through: the status says what went wrong
  }
  if (!response.ok) {
    const reason = typeof payload.error === "string" ? payload.error : `HTTP ${response.status}`;
    const kind = response.status >= 500 ? "unreachable" : "refused";
    throw new TokenError(`The token server refused the request: ${reason}`, kind);
  }
  if (typeof payload.server_url !== "string" || typeof payload.participant_token !== "string") {
    throw new TokenError("The token server answered without server_url and participant_token.", "invalid");
  }
  return { serverUrl: payload.server_url, participantToken: payload.participant_token };
}
