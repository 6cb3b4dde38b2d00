import { useLocalParticipant, useParticipants, useTranscriptions } from "@livekit/components-react";
import { type FormEvent, useEffect, useMemo, useRef, useState } from "react";
import { type Line, toLines } from "../lib/transcript";

// Names and agents seen in this room so far (kept when someone leaves, so their lines stay attributed).
function useSpeakers() {
  const participants = useParticipants();
  const seen = useRef({ names: {} as Record<string, string>, agents: new Set<string>() });
  for (const p of participants) {
    seen.current.names[p.identity] = p.name || (p.isAgent ? "Agent" : p.identity);
    if (p.isAgent) seen.current.agents.add(p.identity);
  }
  const humans = participants.filter((p) => !p.isAgent).length;
  const key = participants.map((p) => `${p.identity}:${p.name}:${p.isAgent}`).join("|");
  // `key` changes when a participant, their name or kind changes: the only inputs of `speakers`
  const speakers = useMemo(() => ({ names: { ...seen.current.names }, agents: new Set(seen.current.agents) }), [key]);
  return { speakers, group: humans > 1 || Object.keys(seen.current.names).length - seen.current.agents.size > 1 };
}

// The live transcript (user and agent, from lk.transcription) and a box to type to the agent.
export function Conversation() {
  const streams = useTranscriptions();
  const { localParticipant } = useLocalParticipant();
  const [typed, setTyped] = useState<Line[]>([]);
  const [draft, setDraft] = useState("");
  const [sendError, setSendError] = useState<string | null>(null);
  const end = useRef<HTMLDivElement>(null);
  const { speakers, group } = useSpeakers();

  const lines = useMemo(
    () =>
      toLines(
        streams.map((s) => ({
          id: s.streamInfo.attributes?.["lk.segment_id"] ?? s.streamInfo.id,
          identity: s.participantInfo.identity,
          text: s.text,
          final: s.streamInfo.attributes?.["lk.transcription_final"] !== "false",
          at: s.streamInfo.timestamp,
        })),
        localParticipant.identity,
        typed,
        speakers,
      ),
    [streams, localParticipant.identity, typed, speakers],
  );

  useEffect(() => {
    // Braces matter: newer browsers return a Promise from scrollIntoView, and an effect must not.
    end.current?.scrollIntoView({ block: "end" });
  }, [lines.length]);

  async function send(event: FormEvent) {
    event.preventDefault();
    const text = draft.trim();
    if (!text) return;
    try {
      await localParticipant.sendText(text, { topic: "lk.chat" });
      setTyped((t) => [...t, { id: `typed-${Date.now()}`, who: "user", text, final: true, at: Date.now() }]);
      setDraft("");
      setSendError(null);
    } catch (error) {
      setSendError(`Message not sent: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  return (
    <section className="conversation">
      <div className="transcript" aria-live="polite">
        {lines.length === 0 && <p className="hint">Say hello, or type below.</p>}
        {lines.map((line) => (
          <div key={line.id} className={`line ${line.who}${line.final ? "" : " interim"}`}>
            {group && (
              <span className="speaker">{line.who === "user" ? "You" : (line.name ?? (line.who === "agent" ? "Agent" : ""))}</span>
            )}
            {line.text}
          </div>
        ))}
        <div ref={end} />
      </div>
      <form className="chat" onSubmit={send}>
        <input
          aria-label="Message to the agent"
          placeholder="Type a message…"
          value={draft}
          onChange={(e) => setDraft(e.target.value)}
          maxLength={2000}
        />
        <button type="submit" disabled={!draft.trim()}>
          Send
        </button>
      </form>
      {sendError && <p className="problem">{sendError}</p>}
    </section>
  );
}
