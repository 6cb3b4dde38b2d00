import { useMediaDeviceSelect, useTrackToggle } from "@livekit/components-react";
import { Track } from "livekit-client";

// Microphone mute and input selection.
export function MicControls() {
  const { enabled, toggle, pending } = useTrackToggle({ source: Track.Source.Microphone });
  const { devices, activeDeviceId, setActiveMediaDevice } = useMediaDeviceSelect({ kind: "audioinput" });
  return (
    <div className="mic-controls">
      <button type="button" className={enabled ? "" : "muted"} onClick={() => toggle()} disabled={pending}>
        {enabled ? "Mute" : "Unmute"}
      </button>
      <select
        aria-label="Microphone"
        value={activeDeviceId}
        onChange={(e) => setActiveMediaDevice(e.target.value)}
        disabled={devices.length === 0}
      >
        {devices.length === 0 && <option value="">No microphone</option>}
        {devices.map((d, i) => (
          <option key={d.deviceId || i} value={d.deviceId}>
            {d.label || `Microphone ${i + 1}`}
          </option>
        ))}
      </select>
    </div>
  );
}
