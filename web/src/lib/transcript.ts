// One ordered conversation from the lk.transcription text streams (user and agent) and typed chat.
export interface StreamSegment {
  id: string;
  identity: string;
  text: string;
  final: boolean;
  at: number;
}

export interface Line {
  id: string;
  who: "user" | "agent";
  text: string;
  final: boolean;
  at: number;
}

export function toLines(segments: StreamSegment[], localIdentity: string, typed: Line[] = []): Line[] {
  const byId = new Map<string, Line>();
  for (const s of segments) {
    const text = s.text.trim();
    if (!text) continue;
    const previous = byId.get(s.id);
    byId.set(s.id, {
      id: s.id,
      who: s.identity === localIdentity ? "user" : "agent",
      text,
      final: s.final || (previous?.final ?? false),
      at: previous ? Math.min(previous.at, s.at) : s.at,
    });
  }
  return [...byId.values(), ...typed].sort((a, b) => a.at - b.at);
}
