import { BarVisualizer, useLocalParticipant, useTrackVolume, useVoiceAssistant } from "@livekit/components-react";
import { Track } from "livekit-client";

// The agent's voice and the user's microphone as bars. The agent's measured level is also kept in a
// data attribute, so a test (or an operator) can see that its audio really plays.
export function Visualizers() {
  const { state, audioTrack } = useVoiceAssistant();
  const { microphoneTrack, localParticipant } = useLocalParticipant();
  const agentLevel = useTrackVolume(audioTrack);
  const micRef = microphoneTrack
    ? { participant: localParticipant, publication: microphoneTrack, source: Track.Source.Microphone }
    : undefined;
  return (
    <div className="visualizers">
      <figure className="agent-viz" data-agent-level={agentLevel.toFixed(3)}>
        <BarVisualizer state={state} track={audioTrack} barCount={7} options={{ minHeight: 12 }} />
        <figcaption>Agent</figcaption>
      </figure>
      <figure className="user-viz">
        <BarVisualizer track={micRef} barCount={5} options={{ minHeight: 8 }} />
        <figcaption>You</figcaption>
      </figure>
    </div>
  );
}
