// The addition explorer (chapter 8): draws the dense and the sparse toy's attention edges for one problem from
// the JSON that the chapter's notebook put in the page. No network, no library: plain DOM and SVG.
(function () {
  "use strict";
  // The head colours of chapter 5's drawing of the same models (spartan_core.plots.style.SEQUENCE).
  const HEAD_COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"];
  const SVG = "http://www.w3.org/2000/svg";
  const CARRY_WORDS = {none: "no carry", units: "carry from the units", tens: "carry from the tens",
                       both: "both carries"};

  function svgElement(tag, attributes) {
    const element = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
    return element;
  }

  function drawModel(panel, label, problem, data, circuitOnly, tooltip) {
    panel.replaceChildren();
    const tokens = Array.from(problem.text);
    const width = 440, height = 300, left = 24, bottom = 36, top = 16;
    const x = (position) => left + position * (width - 2 * left) / (tokens.length - 1);
    const y = (layer) => height - bottom - layer * (height - bottom - top) / data.layers;
    const svg = svgElement("svg", {viewBox: `0 0 ${width} ${height}`, role: "img",
                                   "aria-label": `${label} attention edges for ${problem.text}`});
    for (let layer = 0; layer <= data.layers; layer++) {
      const text = svgElement("text", {x: 2, y: y(layer) + 4, class: "explorer-layer"});
      // level 0 is the embedding; level l + 1 is the residual stream after layer l (chapter 5's labels)
      text.textContent = layer === 0 ? "emb" : `L${layer - 1}`;
      svg.appendChild(text);
    }
    const circuit = new Set(data.circuit[label] || []);
    const edges = problem[label];
    let shown = 0;
    for (const [layer, head, query, key, weight] of edges) {
      const inCircuit = circuit.has(`a${layer}.h${head}`);
      const line = svgElement("line", {
        x1: x(key), y1: y(layer), x2: x(query), y2: y(layer + 1), stroke: HEAD_COLOURS[head % HEAD_COLOURS.length],
        "stroke-width": (1 + 3 * weight).toFixed(2), "stroke-opacity": Math.min(1, 0.2 + weight).toFixed(2),
        class: "explorer-edge" + (inCircuit ? " in-circuit" : " outside-circuit") +
               (circuitOnly && !inCircuit ? " faded" : ""),
      });
      const description = `${label} \u00b7 layer ${layer} \u00b7 head ${head} \u00b7 query ${query} '${tokens[query]}' \u2190 ` +
                          `key ${key} '${tokens[key]}' \u00b7 weight ${weight.toFixed(3)}` +
                          (inCircuit ? " \u00b7 in the circuit" : "");
      line.dataset.description = description;
      line.addEventListener("mouseover", () => { tooltip.textContent = description; });
      svg.appendChild(line);
      if (!(circuitOnly && !inCircuit)) shown++;
    }
    tokens.forEach((token, position) => {
      for (let layer = 0; layer <= data.layers; layer++) {
        svg.appendChild(svgElement("circle", {cx: x(position), cy: y(layer), r: 2.5, class: "explorer-node"}));
      }
      const text = svgElement("text", {x: x(position), y: height - 12, "text-anchor": "middle",
                                       class: "explorer-token"});
      text.textContent = token;
      svg.appendChild(text);
    });
    const caption = document.createElement("p");
    caption.className = "explorer-caption";
    caption.textContent = `${label}: ${shown} of ${edges.length} edges drawn (weight \u2265 ${data.min_weight}); ` +
                          `circuit heads at ${Math.round(100 * data.threshold)} %: ` +
                          (circuit.size ? Array.from(circuit).join(", ") : "none");
    panel.append(svg, caption);
  }

  function build(root) {
    const data = JSON.parse(root.querySelector("script.explorer-data").textContent);
    const controls = document.createElement("div");
    controls.className = "explorer-controls";
    const select = document.createElement("select");
    select.className = "explorer-problem";
    select.setAttribute("aria-label", "problem");
    data.problems.forEach((problem, index) => {
      const option = new Option(`${problem.text}${problem.paper ? " (paper)" : ""}, ` +
                                `${CARRY_WORDS[problem.carry] || problem.carry}`, String(index));
      select.appendChild(option);
    });
    const toggle = document.createElement("label");
    toggle.innerHTML = `<input type="checkbox" class="explorer-circuit"> only the circuit at ` +
                       `${Math.round(100 * data.threshold)} % explained effect`;
    const legend = document.createElement("div");
    legend.className = "explorer-legend";
    for (let head = 0; head < data.heads; head++) {
      const item = document.createElement("span");
      item.className = "explorer-legend-item";
      const swatch = document.createElement("span");
      swatch.className = "explorer-swatch";
      swatch.style.background = HEAD_COLOURS[head % HEAD_COLOURS.length];
      item.append(swatch, `head ${head}`);
      legend.appendChild(item);
    }
    controls.append(select, toggle, legend);
    const panels = document.createElement("div");
    panels.className = "explorer-panels";
    const dense = document.createElement("div"), sparse = document.createElement("div");
    dense.className = "explorer-panel explorer-dense";
    sparse.className = "explorer-panel explorer-sparse";
    panels.append(dense, sparse);
    const tooltip = document.createElement("p");
    tooltip.className = "explorer-tooltip";
    tooltip.textContent = "Hover an edge for its layer, head, tokens and weight.";
    root.append(controls, panels, tooltip);
    const checkbox = toggle.querySelector("input");
    const redraw = () => {
      const problem = data.problems[Number(select.value)];
      drawModel(dense, "dense", problem, data, checkbox.checked, tooltip);
      drawModel(sparse, "sparse", problem, data, checkbox.checked, tooltip);
    };
    select.addEventListener("change", redraw);
    checkbox.addEventListener("change", redraw);
    redraw();
    root.dataset.ready = "true";
  }

  function start() {
    document.querySelectorAll("[data-explorer='addition']").forEach(build);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
