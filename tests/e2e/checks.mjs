// The check runner the SDK scripts share: runs the named checks (all when no argument names
// one), keeps what each observed (or the error it threw), and prints them as one JSON object.
export function checks() {
  const out = {};
  const only = process.argv.slice(2);
  return {
    async check(name, fn) {
      if (only.length && !only.includes(name)) return;
      try {
        out[name] = await fn();
      } catch (e) {
        out[name] = { error: String(e && e.message), status: e && e.status,
                      class: e && e.constructor && e.constructor.name };
      }
    },
    print() {
      console.log(JSON.stringify(out));
    },
  };
}
