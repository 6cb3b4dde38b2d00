// Connects a Room through the token endpoint and reports what a person needs to know.
import { ConnectionState, DisconnectReason, MediaDeviceFailure, Room, RoomEvent } from "livekit-client";
import { useCallback, useEffect, useMemo, useState } from "react";
import type { PageConfig } from "./lib/config";
import { describeError } from "./lib/errors";
import { fetchConnectionDetails, type SessionMode, tokenRequest } from "./lib/token";

export type Status = "idle" | "connecting" | "connected" | "reconnecting";

// How long a person watches "Reconnecting…" before the page gives up and says so.
const RECONNECT_GIVE_UP_MS = 20_000;

export function useSession(config: PageConfig) {
  const room = useMemo(
    () =>
      new Room({
        adaptiveStream: true,
        dynacast: true,
        audioCaptureDefaults: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      }),
    [],
  );
  const [status, setStatus] = useState<Status>("idle");
  const [mode, setMode] = useState<SessionMode>("agent");
  const [problem, setProblem] = useState<string | null>(null);
  const [micProblem, setMicProblem] = useState<string | null>(null);

  useEffect(() => {
    const onState = (state: ConnectionState) => {
      if (state === ConnectionState.Connected) setStatus("connected");
      if (state === ConnectionState.Reconnecting || state === ConnectionState.SignalReconnecting) {
        setStatus("reconnecting");
      }
    };
    let giveUp: ReturnType<typeof setTimeout> | undefined;
    const lost = "The connection to the server was lost. Press Connect to try again.";
    const onReconnecting = () => {
      setProblem("Connection lost. Reconnecting…");
      // Every retry announces itself again: keep the first deadline.
      giveUp ??= setTimeout(() => {
        giveUp = undefined;
        setProblem(lost);
        setStatus("idle");
        void room.disconnect();
      }, RECONNECT_GIVE_UP_MS);
    };
    const onReconnected = () => {
      clearTimeout(giveUp);
      giveUp = undefined;
      setProblem(null);
    };
    const onDisconnected = (reason?: DisconnectReason) => {
      clearTimeout(giveUp);
      giveUp = undefined;
      setStatus("idle");
      if (reason !== undefined && reason !== DisconnectReason.CLIENT_INITIATED) {
        setProblem(lost);
      }
    };
    const onDeviceError = (error: Error) => {
      const failure = MediaDeviceFailure.getFailure(error);
      const denied = Object.assign(new Error(error.message), { name: "NotAllowedError" });
      setMicProblem(describeError(failure === MediaDeviceFailure.PermissionDenied ? denied : error));
    };
    room.on(RoomEvent.ConnectionStateChanged, onState);
    room.on(RoomEvent.Reconnecting, onReconnecting);
    room.on(RoomEvent.SignalReconnecting, onReconnecting);
    room.on(RoomEvent.Reconnected, onReconnected);
    room.on(RoomEvent.Disconnected, onDisconnected);
    room.on(RoomEvent.MediaDevicesError, onDeviceError);
    return () => {
      clearTimeout(giveUp);
      room.off(RoomEvent.ConnectionStateChanged, onState);
      room.off(RoomEvent.Reconnecting, onReconnecting);
      room.off(RoomEvent.SignalReconnecting, onReconnecting);
      room.off(RoomEvent.Reconnected, onReconnected);
      room.off(RoomEvent.Disconnected, onDisconnected);
      room.off(RoomEvent.MediaDevicesError, onDeviceError);
      room.disconnect();
    };
  }, [room]);

  const connect = useCallback(
    async (nextMode: SessionMode) => {
      setProblem(null);
      setMicProblem(null);
      setMode(nextMode);
      setStatus("connecting");
      let serverUrl: string | undefined;
      try {
        const details = await fetchConnectionDetails(config.tokenEndpoint, tokenRequest(nextMode, config.agentName, config));
        serverUrl = details.serverUrl;
        await room.connect(details.serverUrl, details.participantToken);
      } catch (error) {
        setStatus("idle");
        setProblem(describeError(error, serverUrl));
        return;
      }
      try {
        await room.localParticipant.setMicrophoneEnabled(true);
      } catch (error) {
        // Stay connected: the person can still type to the agent and hear it.
        setMicProblem(describeError(error));
      }
    },
    [room, config],
  );

  const disconnect = useCallback(async () => {
    await room.disconnect();
    setStatus("idle");
  }, [room]);

  // A new room, so a new dispatch: another worker (or a freed slot) may take it.
  const retry = useCallback(async () => {
    await room.disconnect();
    await connect("agent");
  }, [room, connect]);

  return { room, status, mode, problem, micProblem, connect, disconnect, retry };
}
