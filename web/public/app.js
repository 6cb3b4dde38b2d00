// Minimal client: token from the standard token endpoint, mic published, agent audio played,
// both transcripts shown from the lk.transcription text streams.
const { Room, RoomEvent, Track } = LivekitClient;
const TOKEN_ENDPOINT = window.TOKEN_ENDPOINT || "/api/token";

const $ = (id) => document.getElementById(id);
let room = null;
const lines = new Map(); // segment id -> element

function say(text) { $("message").textContent = text || ""; }

function setState(state) {
  $("state").textContent = state;
  $("state").className = `state ${state}`;
}

function showSegment(id, who, text, final) {
  let el = lines.get(id);
  if (!el) {
    el = document.createElement("div");
    lines.set(id, el);
    $("transcript").appendChild(el);
  }
  el.className = `line ${who}${final ? "" : " interim"}`;
  el.textContent = text;
  el.scrollIntoView({ block: "end" });
}

async function connect() {
  say("");
  setState("connecting");
  let details;
  try {
    const res = await fetch(TOKEN_ENDPOINT, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ participant_name: "web user" }),
    });
    details = await res.json();
    if (!res.ok) throw new Error(details.error || `token endpoint answered ${res.status}`);
  } catch (err) {
    setState("disconnected");
    say(`Could not get a token: ${err.message}`);
    return;
  }
  room = new Room({ adaptiveStream: true, dynacast: true });
  room.on(RoomEvent.TrackSubscribed, (track) => {
    if (track.kind === Track.Kind.Audio) document.body.appendChild(track.attach());
  });
  room.on(RoomEvent.ParticipantAttributesChanged, (changed, participant) => {
    if (participant.isAgent && changed["lk.agent.state"]) setState(changed["lk.agent.state"]);
  });
  room.on(RoomEvent.Disconnected, () => { setState("disconnected"); $("connect").textContent = "Connect"; $("connect").classList.remove("connected"); });
  room.on(RoomEvent.Reconnecting, () => say("Connection lost, reconnecting…"));
  room.on(RoomEvent.Reconnected, () => say(""));
  room.registerTextStreamHandler("lk.transcription", async (reader, info) => {
    const who = info.identity === room.localParticipant.identity ? "user" : "agent";
    const id = reader.info.attributes?.["lk.segment_id"] || reader.info.id;
    const final = reader.info.attributes?.["lk.transcription_final"] === "true";
    let text = "";
    for await (const chunk of reader) {
      text += chunk;
      showSegment(id, who, text, final);
    }
    showSegment(id, who, text, true);
  });
  try {
    await room.connect(details.server_url, details.participant_token);
    await room.localParticipant.setMicrophoneEnabled(true);
    setState("connected");
    $("connect").textContent = "Disconnect";
    $("connect").classList.add("connected");
  } catch (err) {
    say(err.name === "NotAllowedError" ? "Microphone permission was denied." : `Could not connect: ${err.message}`);
    await room.disconnect();
  }
}

$("connect").addEventListener("click", async () => {
  if (room && room.state !== "disconnected") {
    await room.disconnect();
    room = null;
  } else {
    await connect();
  }
});
