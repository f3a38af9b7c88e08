"""Text of the Help menu's pages (HTML for QTextBrowser)."""

HOW_IT_WORKS = """
<h2>How diffusion works here</h2>
<p>A <b>diffusion model</b> learns to make pictures by learning to <i>remove noise</i>.
During training, each picture from your data set gets a random amount of noise added &mdash; from a
little speckle to pure static &mdash; and the network (a small <i>U-Net</i>, as in the course
<i>How Diffusion Models Work</i>) is asked to guess exactly which noise was added. The <b>loss</b>
on the Train tab is how wrong that guess is on average: lower is better.</p>

<h3>Making a picture</h3>
<p>To draw something new, the app starts from pure random noise and asks the network, again and again,
"what noise is in this?", removing a little each time. After enough small steps a picture appears.
The course's schedule has <b>500 noise levels</b>. A <i>sampler</i> decides how to walk from noise to
picture:</p>
<ul>
<li><b>DDPM</b> takes all 500 steps and adds a little fresh noise at each one &mdash; slow but forgiving,
especially for a model that is still learning.</li>
<li><b>DDIM</b> skips levels (for example 25 steps instead of 500) and adds no fresh noise.</li>
<li><b>DPM-Solver++</b> (2M and 3M), <b>Heun</b> and <b>Euler ancestral</b> are smarter step rules that
get good pictures in 10&ndash;20 model calls. The <b>spacing</b> chooses which noise levels the steps visit;
it works with every sampler.</li>
</ul>
<p>Each step costs one call of the network (<b>NFE</b>, "number of function evaluations"), two with
guidance. Sample &amp; compare runs them side by side from the same starting noise.</p>

<h3>Labels and context</h3>
<p>Every training image can carry <b>labels</b> (for the emoji set: face, person, animal &amp; nature,
food, object, symbol &amp; flag). The labels are given to the network as a <b>context vector</b>, so
it learns what "food" looks like. When sampling you choose the context: one label, or a mix such as
"face 1.0 + food 0.6". Edit labels and compose contexts on the <b>Data &amp; labels</b> tab.</p>
<p>In 10% of training steps the label is hidden (<i>context dropout</i>), so the model also learns to
draw with no label at all. <b>Classifier-free guidance</b> uses that: it compares the labelled and
unlabelled predictions and pushes further in the labelled direction. A guidance scale of 1 is the
plain labelled model; 2&ndash;4 follows the label more strongly, at some cost in variety.</p>

<h3>Training tips</h3>
<ul>
<li><b>Quick demo</b> trains a small network in a few minutes on a laptop CPU. Watch the previews:
first blobs of the right colour, then shapes, then details.</li>
<li>The loss falls fast at first and then slowly; <i>Log scale</i> shows the slow part.
<i>Loss by noise level</i> shows that nearly clean images are the hardest to improve.</li>
<li><b>Pause</b> keeps the model in memory and loads it into Sample &amp; compare; <b>Stop</b> saves a
checkpoint you can resume later. Runs are saved in your data folder, under <tt>runs/</tt>.</li>
</ul>
"""

ABOUT = """
<h3>Diffusion Desk</h3>
<p>Train the small context-conditioned diffusion model of the DeepLearning.AI course
<i>How Diffusion Models Work</i> on built-in emoji or your own images, edit context labels and
compare samplers &mdash; without writing code.</p>
<p>Built with PyTorch, PySide6 (Qt) and pyqtgraph. Data licences: Help &rsaquo; Data licences.</p>
"""
