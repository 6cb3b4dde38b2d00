import { RoomAudioRenderer, RoomContext, StartAudio, useVoiceAssistant } from "@livekit/components-react";
import { BusyNotice } from "./components/BusyNotice";
import { Conversation } from "./components/Conversation";
import { MicControls } from "./components/Controls";
import { People } from "./components/People";
import { Visualizers } from "./components/Visualizers";
import { readConfig } from "./lib/config";
import { type Status, useSession } from "./useSession";

const config = readConfig(window.location.search, import.meta.env);

function AgentStatePill({ status }: { status: Status }) {
  const { state, agent } = useVoiceAssistant();
  const label = status !== "connected" ? status : agent ? state : "waiting for agent";
  return (
    <span className={`pill ${label.replace(/ /g, "-")}`} data-testid="state">
      {label}
    </span>
  );
}

export default function App() {
  const session = useSession(config);
  const live = session.status === "connected" || session.status === "reconnecting";
  return (
    <RoomContext.Provider value={session.room}>
      <main>
        <header>
          <h1>Voice agent</h1>
          <AgentStatePill status={session.status} />
        </header>
        {session.problem && (
          <p className="problem" role="alert">
            {session.problem}
          </p>
        )}
        {session.micProblem && (
          <p className="problem" role="alert">
            {session.micProblem}
          </p>
        )}
        {live ? (
          <>
            <Visualizers />
            {session.mode === "echo" && (
              <p className="hint">Echo test: speak, and you should hear yourself about half a second later.</p>
            )}
            <div className="controls">
              <MicControls />
              <button type="button" className="danger" onClick={session.disconnect}>
                Disconnect
              </button>
            </div>
            {session.mode === "agent" && session.status === "connected" && <BusyNotice onRetry={session.retry} />}
            {session.mode === "agent" && <People />}
            {session.mode === "agent" && <Conversation />}
            <RoomAudioRenderer />
            <StartAudio label="Click to allow audio playback" />
          </>
        ) : (
          <div className="start">
            <button type="button" onClick={() => session.connect("agent")} disabled={session.status === "connecting"}>
              {session.status === "connecting" ? "Connecting…" : "Connect"}
            </button>
            <button
              type="button"
              className="secondary"
              onClick={() => session.connect("echo")}
              disabled={session.status === "connecting"}
            >
              Echo test
            </button>
            <p className="hint">Talk with the agent, or run an echo test to check your microphone and network.</p>
          </div>
        )}
      </main>
    </RoomContext.Provider>
  );
}
