"""The inline stylesheet and script of the HTML report.

Every CSS rule is scoped under ``.nncost-report`` so that a notebook's styles and the report's do
not leak into each other.  The script is one function applied to the report's root element (found
by its per-render id), defines no globals, and only adds behaviour to a page that is complete
without it: the tree folds and unfolds, columns sort, a flat list of the leaf layers can replace
the tree.
"""

from __future__ import annotations

STYLE = """
.nncost-report{font:13px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1b1f24;
background:#fff;max-width:1240px;margin:0 auto;padding:8px 12px;text-align:left}
.nncost-report h2{font-size:19px;margin:4px 0 2px}
.nncost-report h3{font-size:15px;margin:18px 0 6px;border-bottom:1px solid #d8dee4;padding-bottom:2px}
.nncost-report .cmd{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f3f4f6;
padding:4px 8px;border-radius:4px;display:inline-block;white-space:pre-wrap;word-break:break-all}
.nncost-report .muted{color:#656d76;fill:#656d76}
.nncost-report table{border-collapse:collapse;margin:0;font-size:13px}
.nncost-report table.kv th{text-align:left;font-weight:600;padding:1px 16px 1px 0;white-space:nowrap;vertical-align:top;
background:none}
.nncost-report table.kv td{text-align:left;padding:1px 0;background:none}
.nncost-report table.kv tr.warn{color:#b42318}
.nncost-report .charts{display:flex;flex-wrap:wrap;gap:8px 28px}
.nncost-report figure{margin:0}
.nncost-report figcaption{font-weight:600;margin:4px 0}
.nncost-report svg.chart{max-width:100%;height:auto;font-size:11px}
.nncost-report svg.chart text{fill:#24292f;font-size:11px}
.nncost-report svg.chart text.peak{fill:#d62728}
.nncost-report svg.chart text.muted{fill:#57606a;paint-order:stroke;stroke:#fff;stroke-width:3px}
.nncost-report svg.chart .grid{stroke:#e6e8eb;stroke-width:1}
.nncost-report svg.chart .axis{stroke:#57606a;stroke-width:1}
.nncost-report svg.chart .phase{stroke:#8c959f;stroke-dasharray:2 3}
.nncost-report svg.chart line.peak{stroke:#d62728;stroke-width:1.2}
.nncost-report svg.chart circle.peak{fill:#d62728}
.nncost-report svg.chart .roof{fill:none;stroke:#24292f;stroke-width:2}
.nncost-report svg.chart .roof.datasheet{stroke:#8c959f;stroke-width:1;stroke-dasharray:4 3}
.nncost-report svg.chart .pt{fill-opacity:.75;stroke:#fff;stroke-width:.5}
.nncost-report svg.chart .ring{fill:none;stroke:#2ca02c;stroke-width:1.4}
.nncost-report .side{display:flex;flex-wrap:wrap;gap:8px 28px;align-items:flex-start}
.nncost-report .tools{margin:6px 0;display:flex;gap:8px;align-items:center;flex-wrap:wrap}
.nncost-report .tools button{font:inherit;padding:1px 8px;border:1px solid #d0d7de;border-radius:4px;background:#f6f8fa;
cursor:pointer}
.nncost-report .scroll{max-height:80vh;overflow:auto;border:1px solid #d8dee4;content-visibility:auto;
contain-intrinsic-size:auto 600px}
.nncost-report table.layers{width:100%;font-variant-numeric:tabular-nums}
.nncost-report table.layers th{position:sticky;top:0;background:#f3f4f6;text-align:left;padding:3px 8px;
white-space:nowrap;cursor:pointer;user-select:none;border-bottom:1px solid #d0d7de;z-index:1}
.nncost-report table.layers th.n{text-align:right}
.nncost-report table.layers th[aria-sort=ascending]::after{content:" \\25B2"}
.nncost-report table.layers th[aria-sort=descending]::after{content:" \\25BC"}
.nncost-report table.layers td{padding:1px 8px;white-space:nowrap;text-align:left;border:none;background:none}
.nncost-report table.layers td.n{text-align:right}
.nncost-report table.layers tr:hover td{background:#f6f8fa}
.nncost-report table.layers tr.d0 td{font-weight:600}
.nncost-report table.layers tr[hidden]{display:none}
.nncost-report td.nm{padding-left:calc(var(--d)*1.2em + 4px)}
.nncost-report.flat td.nm{padding-left:4px}
.nncost-report .tg,.nncost-report .sp{display:inline-block;width:1.2em;border:0;background:none;padding:0;margin:0;
font:inherit;color:#57606a;cursor:pointer;text-align:left}
.nncost-report.flat .tg{visibility:hidden}
.nncost-report footer{margin-top:10px;font-size:11px;color:#656d76}
"""

SCRIPT = """(function(root){
if(!root||root.getAttribute("data-ready"))return;root.setAttribute("data-ready","1");
var tbody=root.querySelector("table.layers tbody"),heads=root.querySelectorAll("table.layers th");
var rows=Array.prototype.slice.call(tbody.rows),byId={},kids={"":[]},shut={},flat=false,col=-1,dir=1;
rows.forEach(function(r){byId[r.getAttribute("data-i")]=r;kids[r.getAttribute("data-i")]=[];});
rows.forEach(function(r){var p=r.getAttribute("data-p");(p&&kids[p]?kids[p]:kids[""]).push(r);});
function val(r,c){var td=r.cells[c],v=td.getAttribute("data-v");
return v===null?td.textContent.replace(/^[\u25B8\u25BE]/,""):parseFloat(v);}
function cmp(a,b){var x=col<0?0:val(a,col),y=col<0?0:val(b,col),o=x<y?-1:x>y?1:0;
return o*dir||(a.getAttribute("data-i")-b.getAttribute("data-i"));}
function folded(r){var p=r.getAttribute("data-p");while(p&&byId[p]){if(shut[p])return true;
p=byId[p].getAttribute("data-p");}return false;}
function draw(){var list=[];
if(flat){list=rows.filter(function(r){return !kids[r.getAttribute("data-i")].length;});list.sort(cmp);}
else{(function walk(level){level.sort(cmp);level.forEach(function(r){list.push(r);
walk(kids[r.getAttribute("data-i")]);});})(kids[""]);}
var keep=document.createDocumentFragment();
rows.forEach(function(r){r.hidden=true;});
list.forEach(function(r){r.hidden=!flat&&folded(r);keep.appendChild(r);});
tbody.appendChild(keep);
rows.forEach(function(r){var b=r.querySelector(".tg");if(b){var s=!!shut[r.getAttribute("data-i")];
b.textContent=s?"\\u25B8":"\\u25BE";b.setAttribute("aria-expanded",s?"false":"true");}});
if(flat)root.classList.add("flat");else root.classList.remove("flat");}
function fold(all){shut={};if(all)rows.forEach(function(r){if(kids[r.getAttribute("data-i")].length)
shut[r.getAttribute("data-i")]=1;});draw();}
tbody.addEventListener("click",function(e){var b=e.target.closest?e.target.closest(".tg"):null;if(!b)return;
var i=b.closest("tr").getAttribute("data-i");if(shut[i])delete shut[i];else shut[i]=1;draw();});
Array.prototype.forEach.call(heads,function(th,c){th.addEventListener("click",function(){
if(col===c){dir=-dir;}else{col=c;dir=th.classList.contains("n")?-1:1;}
Array.prototype.forEach.call(heads,function(h){h.removeAttribute("aria-sort");});
th.setAttribute("aria-sort",dir>0?"ascending":"descending");draw();});});
function on(sel,fn){var el=root.querySelector(sel);if(el)el.addEventListener("click",fn);}
on(".expand-all",function(){fold(false);});on(".collapse-all",function(){fold(true);});
var box=root.querySelector(".flat-list");if(box)box.addEventListener("change",function(){flat=box.checked;draw();});
var open=parseInt(root.getAttribute("data-open"),10);
if(!isNaN(open))rows.forEach(function(r){if(parseInt(r.getAttribute("data-d"),10)>=open&&
kids[r.getAttribute("data-i")].length)shut[r.getAttribute("data-i")]=1;});
draw();
})"""
