//! Image-text retrieval recall from an images × captions score matrix, as Oscar's
//! `compute_ranks` (run_retrieval.py) defines it, with ties made deterministic and pessimistic.
//!
//! - image → text: an image's rank is that of its best true caption, the number of its false
//!   captions scoring at least as high (0 = first);
//! - text → image: a caption's rank is the number of other images scoring at least as high as its
//!   true image;
//! - R@K = the percentage of queries with rank < K.
//!
//! Ties count against the true item, so a scorer that cannot tell items apart never beats chance:
//! a constant matrix gets R@K = 0 wherever K is at most the number of wrong candidates (and 100
//! where every wrong candidate fits above the true one).
use crate::{Error, Result};
use serde::Serialize;

/// Per-query ranks (0-based) in both directions.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranks {
    /// Per image.
    pub i2t: Vec<usize>,
    /// Per caption.
    pub t2i: Vec<usize>,
}

/// R@1/5/10 both ways, in percent (the keys `eval --task retrieval` writes).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetrievalMetrics {
    #[serde(rename = "i2t_R@1")]
    pub i2t_r1: f64,
    #[serde(rename = "i2t_R@5")]
    pub i2t_r5: f64,
    #[serde(rename = "i2t_R@10")]
    pub i2t_r10: f64,
    #[serde(rename = "t2i_R@1")]
    pub t2i_r1: f64,
    #[serde(rename = "t2i_R@5")]
    pub t2i_r5: f64,
    #[serde(rename = "t2i_R@10")]
    pub t2i_r10: f64,
    pub images: usize,
    pub captions: usize,
}

/// Ranks from `scores`, row-major [images, captions] (`scores[i * captions + c]` scores image i
/// with caption c), where `caption_image[c]` is the image caption c belongs to. Errors: a matrix
/// of the wrong size, a caption of no image, an image with no caption, a NaN score.
pub fn ranks(scores: &[f32], images: usize, caption_image: &[usize]) -> Result<Ranks> {
    let n = caption_image.len();
    if images == 0 || n == 0 {
        return Err(Error::Other(format!("retrieval: {images} images × {n} captions; both must be at least 1")));
    }
    if scores.len() != images * n {
        return Err(Error::Other(format!("retrieval: {} scores for {images} images × {n} captions ({})", scores.len(), images * n)));
    }
    if let Some(c) = caption_image.iter().position(|&i| i >= images) {
        return Err(Error::Other(format!("retrieval: caption {c} belongs to image {}, but there are {images} images", caption_image[c])));
    }
    if let Some(k) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::Other(format!("retrieval: score of image {} and caption {} is NaN", k / n, k % n)));
    }
    let mut i2t = Vec::with_capacity(images);
    for i in 0..images {
        let row = &scores[i * n..(i + 1) * n];
        let best = row.iter().zip(caption_image).filter(|(_, &ci)| ci == i).map(|(s, _)| *s).reduce(f32::max);
        let best = best.ok_or_else(|| Error::Other(format!("retrieval: image {i} has no caption")))?;
        i2t.push(row.iter().zip(caption_image).filter(|(s, &ci)| ci != i && **s >= best).count());
    }
    // t2i row by row (the matrix is row-major): count, per caption, the other images at least as
    // high as its true one
    let truth: Vec<f32> = (0..n).map(|c| scores[caption_image[c] * n + c]).collect();
    let mut t2i = vec![0usize; n];
    for i in 0..images {
        let row = &scores[i * n..(i + 1) * n];
        for c in 0..n {
            t2i[c] += (caption_image[c] != i && row[c] >= truth[c]) as usize;
        }
    }
    Ok(Ranks { i2t, t2i })
}

/// The percentage of `ranks` below `k`.
pub fn recall_at(ranks: &[usize], k: usize) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    100.0 * ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len() as f64
}

/// [`ranks`], then R@1/5/10 both ways.
pub fn retrieval_metrics(scores: &[f32], images: usize, caption_image: &[usize]) -> Result<RetrievalMetrics> {
    let r = ranks(scores, images, caption_image)?;
    Ok(RetrievalMetrics {
        i2t_r1: recall_at(&r.i2t, 1),
        i2t_r5: recall_at(&r.i2t, 5),
        i2t_r10: recall_at(&r.i2t, 10),
        t2i_r1: recall_at(&r.t2i, 1),
        t2i_r5: recall_at(&r.t2i, 5),
        t2i_r10: recall_at(&r.t2i, 10),
        images,
        captions: caption_image.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_hand_ranked() {
        // 3 images, 2 captions each: caption c belongs to image c / 2
        let ci = [0, 0, 1, 1, 2, 2];
        #[rustfmt::skip]
        let s = [
            9.0, 1.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 5.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 3.0, 3.0f32,
        ];
        let r = ranks(&s, 3, &ci).unwrap();
        assert_eq!(r.i2t, vec![0, 0, 0]);
        // t2i: caption 3 (image 1, score 0.0) ties with images 0 and 2 (0.0 each): rank 2
        assert_eq!(r.t2i, vec![0, 0, 0, 2, 0, 0]);
        #[rustfmt::skip]
        let s2 = [
            1.0, 0.5, 2.0, 0.7, 0.5, 3.0,   // image 0: best true 1.0; false >= 1.0: 2.0, 3.0 -> 2
            0.0, 0.0, 0.1, 0.2, 0.2, 0.2,   // image 1: best true 0.2; false >= 0.2: caption 4 and 5 tie -> 2
            0.3, 0.0, 0.0, 0.0, 0.1, 0.4f32, // image 2: best true 0.4; none -> 0
        ];
        let r = ranks(&s2, 3, &ci).unwrap();
        assert_eq!(r.i2t, vec![2, 2, 0]);
        // t2i, per caption column: c0 true 1.0 vs 0.0, 0.3 -> 0; c1 true 0.5 vs 0.0, 0.0 -> 0;
        // c2 true 0.1 vs 2.0, 0.0 -> 1; c3 true 0.2 vs 0.7, 0.0 -> 1; c4 true 0.1 vs 0.5, 0.2 -> 2;
        // c5 true 0.4 vs 3.0, 0.2 -> 1
        assert_eq!(r.t2i, vec![0, 0, 1, 1, 2, 1]);
        let m = retrieval_metrics(&s2, 3, &ci).unwrap();
        assert!((m.i2t_r1 - 100.0 / 3.0).abs() < 1e-9 && m.i2t_r5 == 100.0);
        assert!((m.t2i_r1 - 100.0 * 2.0 / 6.0).abs() < 1e-9 && m.t2i_r5 == 100.0 && m.t2i_r10 == 100.0);
        let j = serde_json::to_value(&m).unwrap();
        assert!(j.get("i2t_R@1").is_some() && j.get("t2i_R@10").is_some());
    }

    #[test]
    fn ties_count_against_the_true_item() {
        // a tie between the true item and one wrong one: rank 1, not 0
        let r = ranks(&[1.0, 1.0, 0.0, 2.0], 2, &[0, 1]).unwrap();
        assert_eq!(r.i2t, vec![1, 0]);
        assert_eq!(r.t2i, vec![0, 0]);
        // two true captions tied with each other do not push each other down
        let r = ranks(&[4.0, 4.0, 1.0, 0.0, 0.0, 3.0], 2, &[0, 0, 1]).unwrap();
        assert_eq!(r.i2t, vec![0, 0]);
    }

    #[test]
    fn constant_scorer_is_not_perfect() {
        // 20 images × 5 captions, every score equal
        let (ni, per) = (20, 5);
        let ci: Vec<usize> = (0..ni * per).map(|c| c / per).collect();
        let s = vec![0.5f32; ni * ni * per];
        let r = ranks(&s, ni, &ci).unwrap();
        assert!(r.i2t.iter().all(|&x| x == (ni - 1) * per)); // all 95 wrong captions tie above
        assert!(r.t2i.iter().all(|&x| x == ni - 1));
        let m = retrieval_metrics(&s, ni, &ci).unwrap();
        assert_eq!([m.i2t_r1, m.i2t_r5, m.i2t_r10, m.t2i_r1, m.t2i_r5, m.t2i_r10], [0.0; 6]);
        // with fewer wrong candidates than K, every true item is within K: 100, which is chance
        let m = retrieval_metrics(&[1.0; 4 * 4], 4, &[0, 1, 2, 3]).unwrap();
        assert_eq!((m.t2i_r1, m.t2i_r5, m.i2t_r1, m.i2t_r10), (0.0, 100.0, 0.0, 100.0));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert!(ranks(&[1.0; 3], 2, &[0, 1]).is_err());
        assert!(ranks(&[1.0; 4], 2, &[0, 2]).is_err());
        assert!(ranks(&[1.0; 4], 2, &[0, 0]).is_err()); // image 1 has no caption
        assert!(ranks(&[1.0, f32::NAN, 0.0, 0.0], 2, &[0, 1]).is_err());
        assert!(ranks(&[], 0, &[]).is_err());
    }
}
