// Drive typage (age-encryption, by age's author) from the interop tests in
// tests/it/pq.rs. The package is not vendored: .ci/run installs it with
// `npm install --prefix target/typage age-encryption@0.3.1`, and the test
// passes that directory in TYPAGE_DIR.
//
//   node typage.mjs keygen                      -> identity line, recipient line
//   node typage.mjs recipient IDENTITY          -> its recipient
//   node typage.mjs encrypt RECIPIENT IN OUT    -> binary age file
//   node typage.mjs encrypt-armor RECIPIENT IN OUT
//   node typage.mjs decrypt IDENTITY_FILE IN OUT
//
// Errors go to stderr with a non-zero exit status.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const dir = process.env.TYPAGE_DIR;
if (!dir) {
  console.error("typage.mjs: TYPAGE_DIR is not set");
  process.exit(2);
}
const age = await import(
  pathToFileURL(join(dir, "node_modules", "age-encryption", "dist", "index.js")).href
);

const [cmd, ...args] = process.argv.slice(2);
try {
  if (cmd === "keygen") {
    const identity = await age.generateHybridIdentity();
    const recipient = await age.identityToRecipient(identity);
    process.stdout.write(identity + "\n" + recipient + "\n");
  } else if (cmd === "recipient") {
    process.stdout.write((await age.identityToRecipient(args[0])) + "\n");
  } else if (cmd === "encrypt" || cmd === "encrypt-armor") {
    const [recipient, input, output] = args;
    const e = new age.Encrypter();
    e.addRecipient(recipient);
    const out = await e.encrypt(readFileSync(input));
    writeFileSync(output, cmd === "encrypt" ? out : age.armor.encode(out));
  } else if (cmd === "decrypt") {
    const [identityFile, input, output] = args;
    const d = new age.Decrypter();
    for (const line of readFileSync(identityFile, "utf8").split("\n")) {
      const t = line.trim();
      if (t !== "" && !t.startsWith("#")) d.addIdentity(t);
    }
    let data = readFileSync(input);
    if (data.subarray(0, 11).toString() === "-----BEGIN ") {
      data = age.armor.decode(data.toString());
    }
    writeFileSync(output, await d.decrypt(data));
  } else {
    console.error(`typage.mjs: unknown command ${cmd}`);
    process.exit(2);
  }
} catch (e) {
  console.error(`typage.mjs: ${cmd}: ${e && e.message ? e.message : e}`);
  process.exit(1);
}
