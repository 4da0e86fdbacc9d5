// What an AI SDK front end sets to talk to a replayhub backend (the guide
// docs/guides/ai-sdk.md shows these lines; chat.mjs runs them).

// --8<-- [start:transport]
import { DefaultChatTransport } from "ai";

// POST {api} sends a message; GET {api}/{chatId}/stream resumes; the example
// app serves both. In React: useChat({ id: chatId, resume: true, transport: chatTransport() })
export function chatTransport(api = "/api/chat", fetch = globalThis.fetch) {
  return new DefaultChatTransport({ api, fetch });
}
// --8<-- [end:transport]

// --8<-- [start:stop]
// chat.stop() only aborts this tab's request (the reply goes on, and can be
// resumed); a Stop button asks the server to cancel it for everyone.
export async function stopReply(chatId, api = "/api/chat") {
  await fetch(`${api}/${encodeURIComponent(chatId)}/stop`, { method: "POST" });
}
// --8<-- [end:stop]
