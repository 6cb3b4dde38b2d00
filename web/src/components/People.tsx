import { useParticipants } from "@livekit/components-react";
import type { Participant } from "livekit-client";

function role(p: Participant): string | null {
  if (p.isAgent) return p.attributes["agent.muted"] === "true" ? "agent, muted" : "agent";
  return p.attributes.role === "moderator" ? "moderator" : null;
}

// Everyone in the room, with who is speaking now (the server's audio levels) and the agent's state.
export function People() {
  const participants = useParticipants();
  return (
    <section className="people" aria-label="People in the room">
      <ul>
        {participants.map((p) => (
          <li
            key={p.identity}
            className={`person${p.isSpeaking ? " speaking" : ""}${p.isAgent ? " agent" : ""}`}
            data-identity={p.identity}
            data-speaking={p.isSpeaking ? "true" : "false"}
          >
            <span className="dot" aria-hidden="true" />
            <span className="who">
              {p.name || (p.isAgent ? "Agent" : p.identity)}
              {p.isLocal ? " (you)" : ""}
            </span>
            {role(p) && <span className="role">{role(p)}</span>}
            {p.isSpeaking && <span className="sr-only"> speaking</span>}
          </li>
        ))}
      </ul>
    </section>
  );
}
