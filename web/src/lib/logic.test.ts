import { describe, expect, it } from "vitest";
import { AGENT_WAIT_MS, agentWait, BUSY_GRACE_MS, roomSaysBusy } from "./agentWait";
import { readConfig } from "./config";
import { describeError } from "./errors";
import { fetchConnectionDetails, TokenError, tokenRequest } from "./token";
import { toLines } from "./transcript";

const respond = (status: number, body: unknown) =>
  (async () => new Response(typeof body === "string" ? body : JSON.stringify(body), { status })) as typeof fetch;

describe("config", () => {
  it("defaults to this server's token endpoint", () => {
    expect(readConfig("")).toEqual({ tokenEndpoint: "/api/token", agentName: undefined });
  });
  it("points at another deployment by query or build setting", () => {
    expect(readConfig("?tokenEndpoint=https://x.test/token&agent=sales").tokenEndpoint).toBe("https://x.test/token");
    expect(readConfig("?agent=sales").agentName).toBe("sales");
    expect(readConfig("", { VITE_TOKEN_ENDPOINT: "/t" }).tokenEndpoint).toBe("/t");
  });
});

describe("token request", () => {
  it("asks for the default agent without a room config", () => {
    expect(tokenRequest("agent")).toEqual({ participant_name: "Web user" });
  });
  it("asks for echo mode through the agent's dispatch metadata", () => {
    expect(tokenRequest("echo", "voice-agent")).toEqual({
      participant_name: "Web user",
      room_config: { agents: [{ agent_name: "voice-agent", metadata: '{"mode":"echo"}' }] },
    });
  });
  it("asks for group handling in a named room, under the person's name", () => {
    expect(tokenRequest("agent", undefined, { roomName: "kitchen", participantName: "Ana" })).toEqual({
      participant_name: "Ana",
      room_name: "kitchen",
      room_config: { agents: [{ metadata: '{"mode":"group"}' }] },
    });
    expect(readConfig("?room=kitchen&name=Ana")).toMatchObject({ roomName: "kitchen", participantName: "Ana" });
  });
  it("returns the connection details on 201", async () => {
    const details = await fetchConnectionDetails("/api/token", {}, respond(201, { server_url: "ws://s", participant_token: "t" }));
    expect(details).toEqual({ serverUrl: "ws://s", participantToken: "t" });
  });
  it("explains a refusal with the server's reason", async () => {
    const failing = fetchConnectionDetails("/api/token", {}, respond(403, { error: "agent 'x' is not available here" }));
    await expect(failing).rejects.toThrow("refused the request: agent 'x' is not available here");
  });
  it("says when the token server cannot be reached", async () => {
    const down = (async () => {
      throw new TypeError("Failed to fetch");
    }) as typeof fetch;
    await expect(fetchConnectionDetails("/api/token", {}, down)).rejects.toMatchObject({ kind: "unreachable" });
  });
  it("rejects an answer without the contract's fields", async () => {
    await expect(fetchConnectionDetails("/t", {}, respond(201, { token: "t" }))).rejects.toBeInstanceOf(TokenError);
    await expect(fetchConnectionDetails("/t", {}, respond(502, "<html>bad gateway</html>"))).rejects.toThrow("HTTP 502");
  });
});

describe("error messages", () => {
  it("names microphone permission problems", () => {
    const denied = Object.assign(new Error("Permission denied"), { name: "NotAllowedError" });
    expect(describeError(denied)).toMatch(/Microphone access was denied/);
  });
  it("names an unreachable LiveKit server", () => {
    expect(describeError(new Error("could not establish signal connection"), "ws://h:7880")).toBe(
      "Can't reach the LiveKit server at ws://h:7880. Is it running?",
    );
  });
});

describe("transcript", () => {
  it("attributes each person's words in a group room, and keeps the agent apart", () => {
    const lines = toLines(
      [
        { id: "b1", identity: "bob", text: "Carol, did you see the game?", final: true, at: 1 },
        { id: "c1", identity: "carol", text: "Yes, great match.", final: true, at: 2 },
        { id: "m1", identity: "me", text: "Juniper, what time is it?", final: true, at: 3 },
        { id: "a1", identity: "agent-1", text: "It is noon.", final: true, at: 4 },
      ],
      "me",
      [],
      { names: { bob: "Bob", carol: "Carol", me: "Alice", "agent-1": "Juniper" }, agents: new Set(["agent-1"]) },
    );
    expect(lines.map((l) => [l.who, l.name, l.text])).toEqual([
      ["other", "Bob", "Carol, did you see the game?"],
      ["other", "Carol", "Yes, great match."],
      ["user", "Alice", "Juniper, what time is it?"],
      ["agent", "Juniper", "It is noon."],
    ]);
  });
  it("orders user and agent lines and merges updates of one segment", () => {
    const lines = toLines(
      [
        { id: "a1", identity: "agent-1", text: "Hi! How can I help?", final: true, at: 1 },
        { id: "u1", identity: "me", text: "what time", final: false, at: 5 },
        { id: "u1", identity: "me", text: "What time is it?", final: true, at: 6 },
        { id: "a2", identity: "agent-1", text: "  ", final: true, at: 7 },
      ],
      "me",
      [{ id: "t1", who: "user", text: "typed", final: true, at: 3 }],
    );
    expect(lines.map((l) => [l.who, l.text, l.final])).toEqual([
      ["agent", "Hi! How can I help?", true],
      ["user", "typed", true],
      ["user", "What time is it?", true],
    ]);
  });
});

describe("waiting for an agent", () => {
  it("is busy when the room says so, once another worker had a moment to take the call", () => {
    expect(agentWait(false, 100, '{"agent":"busy"}')).toBe("waiting");
    expect(agentWait(false, BUSY_GRACE_MS, '{"agent":"busy"}')).toBe("busy");
  });
  it("is busy when no agent joined in time, and waiting before that", () => {
    expect(agentWait(false, 1_000)).toBe("waiting");
    expect(agentWait(false, AGENT_WAIT_MS)).toBe("busy");
  });
  it("is joined once an agent is there, whatever the room said", () => {
    expect(agentWait(true, 60_000, '{"agent":"busy"}')).toBe("joined");
  });
  it("says nothing after the agent ended the call, or left after it had been there", () => {
    expect(agentWait(false, 60_000, '{"agent":"ended"}')).toBe("ended");
    expect(agentWait(false, 60_000, undefined, true)).toBe("waiting");
    expect(agentWait(false, 60_000, '{"agent":"busy"}', true)).toBe("busy");
  });
  it("ignores metadata that is not its own", () => {
    expect(roomSaysBusy("not json")).toBe(false);
    expect(roomSaysBusy('{"agent":"ready"}')).toBe(false);
    expect(roomSaysBusy("[1]")).toBe(false);
  });
});
