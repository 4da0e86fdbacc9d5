// Drives the AI SDK's own chat client (the `ai` package's AbstractChat and
// DefaultChatTransport, what useChat runs) against a replayhub backend, and
// prints one JSON object with what the client ended up with.
//
//   node chat.mjs SCENARIO BASE_URL [BASE_URL_2]
//
// Every response body the client read is captured and each part checked
// against the package's own uiMessageChunkSchema.

import { AbstractChat, parseJsonEventStream, uiMessageChunkSchema } from "ai";
import { chatTransport, stopReply } from "./frontend.mjs";

const [scenario, base, otherBase = base] = process.argv.slice(2);
const requests = []; // {client, method, url, status, body}

function recordingFetch(client) {
  return async (url, init = {}) => {
    const response = await fetch(url, init);
    const record = { client, method: init.method ?? "GET", url: String(url), status: response.status, body: "" };
    requests.push(record);
    if (!response.body) return response;
    const [mine, theirs] = response.body.tee();
    record.done = (async () => {
      const reader = mine.getReader();
      const decoder = new TextDecoder();
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          record.body += decoder.decode(value, { stream: true });
        }
      } catch {
        // The client aborted this response: what arrived is kept.
      }
    })();
    return new Response(theirs, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
}

class State {
  status = "ready";
  error = undefined;
  messages = [];
  pushMessage = (message) => { this.messages = this.messages.concat(message); };
  popMessage = () => { this.messages = this.messages.slice(0, -1); };
  replaceMessage = (index, message) => {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
  };
  snapshot = (thing) => structuredClone(thing);
}

class Chat extends AbstractChat {
  constructor({ client, url, id }) {
    const errors = [];
    super({
      id,
      state: new State(),
      transport: chatTransport(`${url}/api/chat`, recordingFetch(client)),
      onError: (error) => errors.push(String(error)),
    });
    this.errors = errors;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what, check, ms = 15000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// What the assistant has written so far: its reasoning and text parts.
const assistantText = (chat) =>
  (chat.lastMessage?.role === "assistant" ? chat.lastMessage.parts : [])
    .filter((part) => part.type === "text" || part.type === "reasoning")
    .map((part) => part.text)
    .join("");

async function invalidParts() {
  const invalid = [];
  for (const request of requests) {
    await request.done;
    if (!request.body) continue;
    const stream = parseJsonEventStream({
      stream: new Response(request.body).body,
      schema: uiMessageChunkSchema,
    });
    const reader = stream.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      if (!value.success) invalid.push({ url: request.url, error: String(value.error) });
    }
  }
  return invalid;
}

function lastPartTypes(client) {
  return requests
    .filter((request) => request.client === client && request.body)
    .map((request) => {
      const parts = request.body.split("\n").filter((line) => line.startsWith("data: ")).map((line) => line.slice(6));
      return parts.filter((part) => part !== "[DONE]").map((part) => JSON.parse(part).type).at(-1);
    });
}

async function report(chats, extra = {}) {
  const result = {
    ...extra,
    chats: chats.map((chat) => ({ status: chat.status, errors: chat.errors, messages: chat.messages })),
    requests: requests.map(({ client, method, url, status }) => ({ client, method, url: url.replace(/^https?:\/\/[^/]+/, ""), status })),
    invalid: await invalidParts(),
  };
  if (process.env.CHAT_DEBUG) result.bodies = requests.map((request) => request.body);
  console.log(JSON.stringify(result));
}

const scenarios = {
  // Send, drop the connection mid-reply, resume (on the other instance when
  // two are given), then ask to resume again once the reply is over.
  async "drop-and-resume"() {
    const chat = new Chat({ client: "a", url: base, id: `chat-${Date.now()}` });
    const sending = chat.sendMessage({ text: "What is the weather in Lyon?" });
    await until("some reply text", () => assistantText(chat).length > 10);
    const partialText = assistantText(chat);
    await chat.stop(); // aborts this client's fetch only: a disconnect, not a Stop
    await sending;
    chat["transport"] = chatTransport(`${otherBase}/api/chat`, recordingFetch("a")); // the reload lands on another instance
    await chat.resumeStream();
    await until("the resumed reply", () => chat.status === "ready");
    const afterEnd = chat.messages.length;
    await chat.resumeStream(); // nothing to resume now: 204
    await report([chat], { partialText, messagesAfterEnd: afterEnd, messagesAfterSecondResume: chat.messages.length });
  },

  // Client a streams; client b (another tab) presses Stop.
  async stop() {
    const id = `chat-${Date.now()}`;
    const chat = new Chat({ client: "a", url: base, id });
    const sending = chat.sendMessage({ text: "Tell me about Oslo" });
    await until("some reply text", () => assistantText(chat).length > 5);
    await stopReply(id, `${otherBase}/api/chat`); // from another tab, on another instance
    await sending;
    await report([chat], { lastParts: lastPartTypes("a") });
  },

  // Client a streams; client b sends a new message to the same chat.
  async takeover() {
    const id = `chat-${Date.now()}`;
    const first = new Chat({ client: "a", url: base, id });
    const firstSending = first.sendMessage({ text: "Weather in Rome?" });
    await until("some reply text", () => assistantText(first).length > 5);
    const second = new Chat({ client: "b", url: otherBase, id });
    await second.sendMessage({ text: "Weather in Madrid?" });
    await firstSending;
    await report([first, second], { lastPartsA: lastPartTypes("a"), lastPartsB: lastPartTypes("b") });
  },
};

await scenarios[scenario]();
