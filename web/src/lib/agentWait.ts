// Whether a person waiting for the agent should be told that none is free: the room's metadata says so (the agent
// worker or the dispatcher sets {"agent": "busy"}), or no agent has joined after AGENT_WAIT_MS.
export const AGENT_WAIT_MS = 6_000;

export type AgentWait = "joined" | "waiting" | "busy" | "ended";

function agentStatus(metadata: string | undefined): unknown {
  if (!metadata) return undefined;
  try {
    const parsed: unknown = JSON.parse(metadata);
    return typeof parsed === "object" && parsed !== null ? (parsed as { agent?: unknown }).agent : undefined;
  } catch {
    return undefined;
  }
}

export function roomSaysBusy(metadata: string | undefined): boolean {
  return agentStatus(metadata) === "busy";
}

// A worker that refuses a call says "busy" at once, but livekit-server may still hand the call to another worker:
// give that a moment before telling the person.
export const BUSY_GRACE_MS = 2_000;

// `hadAgent`: an agent was here earlier in this call; its leaving is not a reason to say the agents are busy.
export function agentWait(hasAgent: boolean, waitedMs: number, metadata?: string, hadAgent = false): AgentWait {
  if (hasAgent) return "joined";
  if (agentStatus(metadata) === "ended") return "ended";
  const told = roomSaysBusy(metadata) && waitedMs >= BUSY_GRACE_MS;
  return told || (!hadAgent && waitedMs >= AGENT_WAIT_MS) ? "busy" : "waiting";
}

export const BUSY_MESSAGE =
  "All agents are busy right now. Stay here and one will join as soon as it is free, or press Retry.";
