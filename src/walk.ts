/**
 * The walk behind `revive` and the channels' decoder: it visits a received
 * message (plain objects, arrays, Maps, Sets; any depth; cycles allowed) in
 * place and asks a leaf function what each object becomes.
 *
 * Module-level functions over one state object: no closures are made per
 * message. (A list instead of the `seen` Map for small messages was tried
 * in the sixth session: no difference in a cold revive, where each step of
 * the walk costs 0.2–0.9 µs, the Map's included.)
 */
import { types } from 'node:util';

import { ArrayPoolError } from './errors.js';

/** Returned by a leaf function for objects it does not replace. */
export const NOT_A_LEAF: unique symbol = Symbol('not a leaf');

/** What a leaf function returns: the object's replacement (or the object), or NOT_A_LEAF to descend. */
export type Leaf = (node: object) => unknown;

/** `visitProperty`'s "the caller did not read the value". */
const NO_VALUE: unique symbol = Symbol('no value');

const mapEntries = Map.prototype.entries;
const mapClear = Map.prototype.clear;
const mapSet = Map.prototype.set;
const setValues = Set.prototype.values;
const setClear = Set.prototype.clear;
const setAdd = Set.prototype.add;

/**
 * One walk's state. `seen`: every object met and what it became, so that
 * each is visited once: cycles end, and a handle met twice yields one array
 * (one reference).
 */
interface Walk {
  readonly leaf: Leaf;
  readonly opaque: (node: object) => boolean;
  readonly seen: Map<object, unknown>;
}

/**
 * An object whose prototype is Object.prototype or null: what structured
 * clone and JSON make of an object. Asked before the Map and Set checks,
 * which are calls into C++ (a Map or Set whose prototype was set to one of
 * these is walked as a plain object: its entries are not visited).
 */
function isPlainObject(node: object): boolean {
  const proto: unknown = Object.getPrototypeOf(node);
  return proto === Object.prototype || proto === null;
}

/**
 * Visits `value` in place, asking `leaf` what each object becomes
 * (`NOT_A_LEAF`: descend into it). Typed arrays, DataViews and the objects
 * `opaque` picks are left as they are, unasked.
 *
 * Trusting nothing about the containers: only own enumerable data
 * properties of objects are visited, so no getter or setter runs (a getter
 * could answer differently each time, or have effects). A property is
 * written only when its value is replaced, so a container without handles
 * is never written to (a frozen message revives as it is); a handle in a
 * read-only property (a frozen object or array) cannot be replaced in
 * place: ERR_INVALID_ARG, after which the caller releases what was
 * attached. Array elements are read directly, since reading each one's
 * descriptor costs ~100 ns (a 1e6-number array: 93 ms that way, under 1 ms
 * read directly); an element that is an object is then confirmed to be an
 * own data property holding that value, so a value inherited through a hole
 * (a polluted Array.prototype) is left alone. A getter on an array index,
 * which no message can carry (structured clone and JSON make plain data),
 * would run once. Maps and Sets are read and rebuilt through the built-in
 * methods (not ones an instance or subclass may override), and only when
 * something in them was replaced.
 */
export function walkMessage(value: unknown, leaf: Leaf, opaque: (node: object) => boolean): unknown {
  return visit({ leaf, opaque, seen: new Map() }, value);
}

function visit(walk: Walk, node: unknown): unknown {
  if (typeof node !== 'object' || node === null || ArrayBuffer.isView(node) || walk.opaque(node)) return node;
  if (walk.seen.has(node)) return walk.seen.get(node);
  const replaced = walk.leaf(node);
  if (replaced !== NOT_A_LEAF) {
    walk.seen.set(node, replaced);
    return replaced;
  }
  walk.seen.set(node, node);
  if (Array.isArray(node)) {
    const length = node.length;
    for (let i = 0; i < length; i++) {
      const element: unknown = node[i];
      if (typeof element === 'object' && element !== null) visitProperty(walk, node, i, element);
    }
  } else if (isPlainObject(node)) {
    const keys = Object.keys(node);
    for (let i = 0; i < keys.length; i++) visitProperty(walk, node, keys[i] as string, NO_VALUE);
  } else if (types.isMap(node)) {
    const entries = [...(mapEntries.call(node) as IterableIterator<[unknown, unknown]>)];
    const next = entries.map(([k, v]): [unknown, unknown] => [visit(walk, k), visit(walk, v)]);
    if (next.some(([k, v], i) => k !== entries[i]?.[0] || v !== entries[i]?.[1])) {
      mapClear.call(node);
      for (const [k, v] of next) mapSet.call(node, k, v);
    }
  } else if (types.isSet(node)) {
    const items = [...(setValues.call(node) as IterableIterator<unknown>)];
    const next = items.map((item) => visit(walk, item));
    if (next.some((v, i) => v !== items[i])) {
      setClear.call(node);
      for (const v of next) setAdd.call(node, v);
    }
  }
  return node;
}

/** Visits `container[key]` if it is an own data property (holding `read`, when the caller read it already). */
function visitProperty(walk: Walk, container: object, key: string | number, read: unknown): void {
  const desc = Object.getOwnPropertyDescriptor(container, key);
  if (desc === undefined || !('value' in desc)) return; // a hole, or an accessor: never invoked
  const before: unknown = desc.value;
  if (typeof before !== 'object' || before === null) return;
  if (read !== NO_VALUE && read !== before) return; // not what the array read gave: leave it
  const after = visit(walk, before);
  if (after === before) return;
  if (desc.writable !== true) {
    throw new ArrayPoolError(
      'ERR_INVALID_ARG',
      `revive: the handle at ${JSON.stringify(String(key))} is in a read-only property (a frozen container?); revive replaces handles in place`,
    );
  }
  // An existing own writable data property: assignment sets it (even one
  // named "__proto__", which JSON.parse creates as an own property), never
  // a setter or the prototype.
  (container as Record<string | number, unknown>)[key] = after;
}
