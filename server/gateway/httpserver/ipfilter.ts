/** ipFilter `{blockByDefault, allowIPs, blockIPs}` of servers, rules and paths (Easegress `pkg/util/ipfilter`). */
import type { IPFilterSpec, Stored } from "../../easegress/specs/mod.ts";

interface Cidr {
  v6: boolean;
  addr: bigint;
  mask: bigint;
}

function parseAddr(s: string): { v6: boolean; addr: bigint } | undefined {
  if (/^\d+\.\d+\.\d+\.\d+$/.test(s)) {
    const p = s.split(".").map(Number);
    if (p.some((x) => x > 255)) return undefined;
    return { v6: false, addr: BigInt(((p[0] << 24) >>> 0) + (p[1] << 16) + (p[2] << 8) + p[3]) };
  }
  if (s.includes(":")) {
    const v4tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
    let t = s;
    if (v4tail) {
      const a = parseAddr(v4tail[1]);
      if (!a) return undefined;
      t = s.slice(0, -v4tail[1].length) + ((a.addr >> 16n) & 0xffffn).toString(16) + ":" +
        (a.addr & 0xffffn).toString(16);
    }
    const halves = t.split("::");
    if (halves.length > 2) return undefined;
    const head = halves[0] ? halves[0].split(":") : [];
    const tail = halves.length === 2 && halves[1] ? halves[1].split(":") : [];
    const fill = halves.length === 2 ? 8 - head.length - tail.length : 0;
    const groups = [...head, ...Array(fill).fill("0"), ...tail];
    if (groups.length !== 8 || groups.some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) return undefined;
    let v = 0n;
    for (const g of groups) v = (v << 16n) | BigInt(parseInt(g, 16));
    return { v6: true, addr: v };
  }
  return undefined;
}

function parseCidr(s: string): Cidr {
  const [ip, bits] = s.split("/");
  const a = parseAddr(ip);
  if (!a) throw new Error(`invalid ip or cidr: ${s}`);
  const width = a.v6 ? 128 : 32;
  const n = bits === undefined ? width : Number(bits);
  if (!(n >= 0 && n <= width)) throw new Error(`invalid ip or cidr: ${s}`);
  const mask = n === 0 ? 0n : ((1n << BigInt(n)) - 1n) << BigInt(width - n);
  return { v6: a.v6, addr: a.addr & mask, mask };
}

function contains(list: Cidr[], ip: { v6: boolean; addr: bigint }): boolean {
  for (const c of list) if (c.v6 === ip.v6 && (ip.addr & c.mask) === c.addr) return true;
  return false;
}

/** A compiled ipFilter. */
export class IpFilter {
  #allowDefault: boolean;
  #allow: Cidr[];
  #block: Cidr[];

  constructor(spec: Stored<IPFilterSpec>) {
    this.#allowDefault = !spec.blockByDefault;
    this.#allow = ((spec.allowIPs ?? []) as string[]).map(parseCidr);
    this.#block = ((spec.blockIPs ?? []) as string[]).map(parseCidr);
  }

  /** Whether the IP passes, by Easegress's rules (in both lists: the default). */
  allow(ipText: string): boolean {
    const ip = parseAddr(ipText.startsWith("::ffff:") ? ipText.slice(7) : ipText);
    if (!ip) return this.#allowDefault;
    const inAllow = contains(this.#allow, ip);
    if (this.#allow.length > 0 && !inAllow) return false;
    const inBlock = contains(this.#block, ip);
    if (inAllow && inBlock) return this.#allowDefault;
    if (inAllow) return true;
    if (inBlock) return false;
    return this.#allowDefault;
  }
}

/** An IpFilter for a spec, or null when there is none. */
export function ipFilterOf(spec: Stored<IPFilterSpec> | undefined | null): IpFilter | null {
  return spec ? new IpFilter(spec) : null;
}
