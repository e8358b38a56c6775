// A Node.js client of Threadline: it loads the contract from protos/ at run time
// (@grpc/proto-loader) and talks to a running server over plaintext gRPC.
//
//   npm ci && node client.js [host:port]     (default: $THREADLINE_ADDRESS, else 127.0.0.1:50051)
//
// It creates a thread (Ask), streams a second turn token by token (StreamAsk),
// reads the thread back (History), moves its head back one checkpoint (Rewind),
// and shows how a caller reads the ErrorInfo reason of a NOT_FOUND. It prints one
// line per step and exits 0 when every step behaved as the contract says.
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const PROTOS = path.resolve(__dirname, "..", "..", "protos");

// Field names as the .proto spells them; 64-bit integers and enums as strings.
const definition = protoLoader.loadSync("threadline/v1/threadline.proto", {
  includeDirs: [PROTOS],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { ThreadlineService } = grpc.loadPackageDefinition(definition).threadline.v1;

// google.rpc.Status and google.rpc.ErrorInfo, the two messages a caller needs to read
// the `grpc-status-details-bin` trailer (field numbers as in google/rpc/*.proto).
const rpcTypes = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: { nested: { Any: { fields: { type_url: { type: "string", id: 1 }, value: { type: "bytes", id: 2 } } } } },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: "int32", id: 1 },
                message: { type: "string", id: 2 },
                details: { rule: "repeated", type: "google.protobuf.Any", id: 3 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: "string", id: 1 },
                domain: { type: "string", id: 2 },
                metadata: { keyType: "string", type: "string", id: 3 },
              },
            },
          },
        },
      },
    },
  },
});
const Status = rpcTypes.lookupType("google.rpc.Status");
const ErrorInfo = rpcTypes.lookupType("google.rpc.ErrorInfo");
const ERROR_INFO_TYPE_URL = "type.googleapis.com/google.rpc.ErrorInfo";

/** The ErrorInfo detail of a failed call, or null when its status carries none. */
function errorInfo(err) {
  const [details] = err.metadata ? err.metadata.get("grpc-status-details-bin") : [];
  if (!details) return null;
  const status = Status.decode(details);
  const any = status.details.find((d) => d.type_url === ERROR_INFO_TYPE_URL);
  return any ? ErrorInfo.toObject(ErrorInfo.decode(any.value), { defaults: true }) : null;
}

const statusName = (code) => Object.keys(grpc.status).find((name) => grpc.status[name] === code);

/** A unary call as a promise. */
function unary(client, method, request, timeoutSeconds = 30) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + timeoutSeconds * 1000);
    client[method](request, { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

function check(condition, message) {
  if (!condition) throw new Error(`unexpected: ${message}`);
}

async function main() {
  const address = process.argv[2] || process.env.THREADLINE_ADDRESS || "127.0.0.1:50051";
  const client = new ThreadlineService(address, grpc.credentials.createInsecure());
  try {
    // Ask with no thread_id creates a thread and returns its id.
    const asked = await unary(client, "Ask", { query: "What is 2+3?" });
    const threadId = asked.turn.thread_id;
    console.log(`ask: thread ${threadId} answered ${JSON.stringify(asked.turn.answer)}`);

    // StreamAsk: tokens as the model produces them, then the final Turn.
    const textByMessage = new Map(); // message_id -> its text so far
    let lastMessageId = "";
    let tokens = 0;
    const final = await new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + 30 * 1000);
      const call = client.StreamAsk({ thread_id: threadId, query: "What is 6*7?" }, { deadline });
      let turn = null;
      call.on("data", (event) => {
        if (event.event === "token") {
          tokens += 1;
          lastMessageId = event.token.message_id;
          textByMessage.set(lastMessageId, (textByMessage.get(lastMessageId) || "") + event.token.text);
          console.log(`stream: token ${JSON.stringify(event.token.text)}`);
        } else if (event.event === "tool_call") {
          console.log(`stream: tool call ${event.tool_call.name}(${event.tool_call.arguments_json})`);
        } else if (event.event === "tool_result") {
          console.log(`stream: tool result ${JSON.stringify(event.tool_result.content)}`);
        } else if (event.event === "final") {
          turn = event.final;
        }
      });
      call.on("error", reject);
      call.on("end", () => (turn ? resolve(turn) : reject(new Error("the stream ended without its final event"))));
    });
    check(tokens > 0, "no token was streamed");
    // The contract: the last AI message's tokens, put together, are the final answer.
    check(textByMessage.get(lastMessageId) === final.answer, "the tokens do not spell the answer");
    console.log(`stream: ${tokens} tokens, final answer ${JSON.stringify(final.answer)}`);

    // History: the conversation and the thread's checkpoints, newest first.
    const history = await unary(client, "History", { thread_id: threadId });
    console.log(
      `history: ${history.message_count} messages, ${history.checkpoints.length} checkpoints, ` +
        `head ${history.head_checkpoint_id}`,
    );

    // Rewind: a new head holding the state of an earlier checkpoint.
    const rewound = await unary(client, "Rewind", { thread_id: threadId, steps_back: 1 });
    check(rewound.rewound_to_checkpoint_id === history.checkpoints[0].parent_checkpoint_id, "rewound elsewhere");
    console.log(
      `rewind: head ${rewound.head.checkpoint_id} holds ${rewound.rewound_to_checkpoint_id}, ` +
        `${rewound.messages.length} messages`,
    );

    // An unknown thread: NOT_FOUND, with the ErrorInfo reason in the status details trailer.
    try {
      await unary(client, "History", { thread_id: "no-such-thread" });
      check(false, "History of an unknown thread succeeded");
    } catch (err) {
      if (err.code !== grpc.status.NOT_FOUND) throw err;
      const info = errorInfo(err);
      check(info !== null, "NOT_FOUND without ErrorInfo");
      console.log(`not found: ${statusName(err.code)} reason ${info.reason} domain ${info.domain}`);
    }
  } finally {
    client.close();
  }
}

main().then(
  () => console.log("ok"),
  (err) => {
    console.error(`error: ${err.code !== undefined ? `${statusName(err.code)}: ` : ""}${err.details || err.message}`);
    process.exitCode = 1;
  },
);
