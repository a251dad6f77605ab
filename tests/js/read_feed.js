// Reads a feed on stdin with npm's rss-parser and prints what it gives a JavaScript program, as JSON.
"use strict";
const Parser = require("rss-parser");

const chunks = [];
process.stdin.on("data", (chunk) => chunks.push(chunk));
process.stdin.on("end", () => {
  new Parser()
    .parseString(Buffer.concat(chunks).toString("utf8"))
    .then((feed) => process.stdout.write(JSON.stringify(feed)))
    .catch((error) => {
      console.error(`rss-parser: ${error.message}`);
      process.exit(1);
    });
});
