import { useLocalParticipant, useTranscriptions } from "@livekit/components-react";
import { type FormEvent, useEffect, useMemo, useRef, useState } from "react";
import { type Line, toLines } from "../lib/transcript";

// The live transcript (user and agent, from lk.transcription) and a box to type to the agent.
export function Conversation() {
  const streams = useTranscriptions();
  const { localParticipant } = useLocalParticipant();
  const [typed, setTyped] = useState<Line[]>([]);
  const [draft, setDraft] = useState("");
  const [sendError, setSendError] = useState<string | null>(null);
  const end = useRef<HTMLDivElement>(null);

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
      ),
    [streams, localParticipant.identity, typed],
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
