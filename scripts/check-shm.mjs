// Run after the test suites: no arraypool segment may be left in /dev/shm.
import { readdirSync } from 'node:fs';

const left = readdirSync('/dev/shm').filter((name) => name.startsWith('arraypool-'));
if (left.length > 0) {
  console.error(`FAIL: ${left.length} arraypool segment(s) left in /dev/shm: ${left.join(', ')}`);
  process.exit(1);
}
console.log('/dev/shm: no arraypool segment left behind');
