// One ordered conversation from the lk.transcription text streams (user and agent) and typed chat.
export interface StreamSegment {
  id: string;
  identity: string;
  text: string;
  final: boolean;
  at: number;
}

// "user" is this page's person, "other" another person in a group room, "agent" the agent.
export interface Line {
  id: string;
  who: "user" | "agent" | "other";
  name?: string;
  text: string;
  final: boolean;
  at: number;
}

export interface Speakers {
  // Display names by identity, and which identities are agents. Without them every other sender is the agent.
  names?: Record<string, string>;
  agents?: Set<string>;
}

export function toLines(
  segments: StreamSegment[],
  localIdentity: string,
  typed: Line[] = [],
  speakers: Speakers = {},
): Line[] {
  const byId = new Map<string, Line>();
  for (const s of segments) {
    const text = s.text.trim();
    if (!text) continue;
    const previous = byId.get(s.id);
    const who =
      s.identity === localIdentity ? "user" : !speakers.agents || speakers.agents.has(s.identity) ? "agent" : "other";
    byId.set(s.id, {
      id: s.id,
      who,
      name: speakers.names?.[s.identity] ?? previous?.name,
      text,
      final: s.final || (previous?.final ?? false),
      at: previous ? Math.min(previous.at, s.at) : s.at,
    });
  }
  return [...byId.values(), ...typed].sort((a, b) => a.at - b.at);
}
