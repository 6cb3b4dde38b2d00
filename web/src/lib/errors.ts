// Turns what the browser and livekit-client throw into one sentence a person can act on.
import { TokenError } from "./token";

export function describeError(error: unknown, serverUrl?: string): string {
  if (error instanceof TokenError) return error.message;
  const name = error instanceof Error ? error.name : "";
  const message = error instanceof Error ? error.message : String(error);
  if (name === "NotAllowedError" || name === "SecurityError" || /permission/i.test(message)) {
    return "Microphone access was denied. Allow the microphone for this site in the browser's settings, then reconnect.";
  }
  if (name === "NotFoundError" || /requested device not found/i.test(message)) {
    return "No microphone was found. Plug one in or pick another input, then reconnect.";
  }
  if (name === "NotReadableError") {
    return "The microphone is busy in another application.";
  }
  if (/could not establish|websocket|signal|failed to fetch|network|timed out|ConnectionError/i.test(`${name} ${message}`)) {
    return `Can't reach the LiveKit server${serverUrl ? ` at ${serverUrl}` : ""}. Is it running?`;
  }
  return message || "Something went wrong.";
}
