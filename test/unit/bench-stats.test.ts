/** The bench's percentile maths and CPU-profile ranking (pure logic, so plain inputs). */
import { expect } from "chai";
import { summarizeProfile } from "../../bench/profile-summary.js";
import { missFactor, type Figure } from "../../bench/results.js";
import { percentile, summarize } from "../../bench/stats.js";

describe("bench stats", () => {
  it("takes nearest-rank percentiles, so tiny samples report real observations", () => {
    const sorted = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(sorted, 50)).to.equal(50);
    expect(percentile(sorted, 90)).to.equal(90);
    expect(percentile(sorted, 99)).to.equal(99);
    expect(percentile([7], 99)).to.equal(7);
    expect(percentile([3, 9], 50)).to.equal(3);
  });

  it("summarises unsorted samples and reports N", () => {
    const s = summarize([5, 1, 4, 2, 3]);
    expect(s).to.include({ n: 5, p50: 3, min: 1, max: 5, mean: 3 });
    expect(summarize([]).n).to.equal(0);
    expect(summarize([]).p50).to.be.NaN;
  });

  it("measures how far a figure misses its goal in either direction", () => {
    const base: Figure = { id: "x", section: 1, label: "x", unit: "ms", value: 2 };
    expect(missFactor({ ...base, goal: { op: "<=", value: 1 } })).to.equal(2);
    expect(missFactor({ ...base, value: 500, goal: { op: ">=", value: 2000 } })).to.equal(4);
    expect(missFactor({ ...base, value: 3, goal: { op: "<=", value: 0 } })).to.equal(3);
    expect(missFactor(base)).to.equal(undefined);
  });
});

describe("bench profile summary", () => {
  it("attributes sample time to the sampled function as self time, 1-based lines", () => {
    const profile = {
      nodes: [
        { id: 1, callFrame: { functionName: "(root)", url: "", lineNumber: -1, columnNumber: -1 } },
        { id: 2, callFrame: { functionName: "hot", url: "file:///a.js", lineNumber: 9, columnNumber: 0 } },
        { id: 3, callFrame: { functionName: "", url: "file:///b.js", lineNumber: 0, columnNumber: 4 } },
      ],
      samples: [2, 2, 3, 2],
      timeDeltas: [1000, 3000, 2000, 4000],
    };
    const summary = summarizeProfile(profile, "x.cpuprofile", 5);
    expect(summary.totalMs).to.equal(10);
    expect(summary.top[0]).to.deep.include({ functionName: "hot", location: "file:///a.js:10", selfMs: 8, percent: 80 });
    expect(summary.top[1]).to.deep.include({ functionName: "(anonymous)", location: "file:///b.js:1", selfMs: 2 });
    expect(() => summarizeProfile({ nodes: [] }, "bad", 5)).to.throw(/not a V8 CPU profile/);
  });
});
