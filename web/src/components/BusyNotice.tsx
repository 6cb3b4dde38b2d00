// Tells a person waiting in a room that no agent is free, and lets them try again.
import { useRoomContext, useVoiceAssistant } from "@livekit/components-react";
import { RoomEvent } from "livekit-client";
import { useEffect, useState } from "react";
import { agentWait, BUSY_MESSAGE } from "../lib/agentWait";

export function BusyNotice({ onRetry }: { onRetry: () => void }) {
  const room = useRoomContext();
  const { agent } = useVoiceAssistant();
  const [since] = useState(() => Date.now());
  const [now, setNow] = useState(() => Date.now());
  const [metadata, setMetadata] = useState(room.metadata);
  const [hadAgent, setHadAgent] = useState(false);
  useEffect(() => {
    if (agent !== undefined) setHadAgent(true);
  }, [agent]);

  useEffect(() => {
    const onMetadata = (value: string) => setMetadata(value);
    room.on(RoomEvent.RoomMetadataChanged, onMetadata);
    const tick = setInterval(() => setNow(Date.now()), 500);
    return () => {
      room.off(RoomEvent.RoomMetadataChanged, onMetadata);
      clearInterval(tick);
    };
  }, [room]);

  if (agentWait(agent !== undefined, now - since, metadata, hadAgent) !== "busy") return null;
  return (
    <p className="problem" role="alert" data-testid="busy">
      {BUSY_MESSAGE}{" "}
      <button type="button" className="secondary" onClick={onRetry}>
        Retry
      </button>
    </p>
  );
}
