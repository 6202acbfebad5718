// Checks Adaptive Cards with Microsoft's own Adaptive Cards library (npm `adaptivecards`).
//
// Reads a JSON array of cards on standard input; the first argument is the library's
// dist/adaptivecards.js. Each card is parsed (every parse event is a problem: an unknown
// element or action type, an invalid property value), its properties validated
// (validateProperties), and serialized back with toJSON(), which must equal what was sent
// apart from the host-specific properties the library does not model (`msteams` and
// `refresh`) and an action's `fallback`, which it reads (a fallback of an unknown type is a
// parse event) but does not write back: anything else dropped or changed is a payload the
// library does not describe.
// Prints one line per problem; exits 1 if any.
//
//     node check_cards.js .ci/node/node_modules/adaptivecards/dist/adaptivecards.js < cards.json

const AC = require(require("path").resolve(process.argv[2]));

// Host-specific properties, not part of the Adaptive Cards schema the library models.
const HOST_KEYS = new Set(["msteams", "refresh", "fallback"]);

function strip(value) {
  if (Array.isArray(value)) return value.map(strip);
  if (value && typeof value === "object") {
    const out = {};
    for (const key of Object.keys(value).sort()) {
      if (!HOST_KEYS.has(key) && key !== "$schema") out[key] = strip(value[key]);
    }
    return out;
  }
  return value;
}

const input = require("fs").readFileSync(0, "utf8");
const cards = JSON.parse(input);
const problems = [];
cards.forEach((sent, i) => {
  const card = new AC.AdaptiveCard();
  const context = new AC.SerializationContext();
  card.parse(sent, context);
  for (let e = 0; e < context.eventCount; e++) {
    problems.push(`card ${i}: parse: ${context.getEventAt(e).message}`);
  }
  for (const e of card.validateProperties().validationEvents) {
    problems.push(`card ${i}: invalid: ${e.message}`);
  }
  const back = JSON.stringify(strip(card.toJSON()));
  const want = JSON.stringify(strip(sent));
  if (back !== want) {
    let at = 0;
    while (at < want.length && want[at] === back[at]) at++;
    const from = Math.max(0, at - 200);
    problems.push(`card ${i}: not kept by the round trip, from character ${at}:\n  sent …${want.slice(from, at + 400)}\n  back …${back.slice(from, at + 400)}`);
  }
});
for (const p of problems) console.log(p);
console.error(`checked ${cards.length} cards`);
process.exit(problems.length ? 1 : 0);
