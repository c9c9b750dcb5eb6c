//! Lexical retrieval: words to terms, BM25 scoring in process, and the same weighting as
//! sparse vectors for a Qdrant server (which applies the IDF half itself).
//!
//! Analysts describe behaviour in network words ("SSH from a pump", "beacons every
//! minute", "writes over 502"); ATT&CK describes it in its own ("Remote Services",
//! "Standard Application Layer Protocol", "Unauthorized Command Message"). A query is
//! expanded with the ATT&CK words for the network words it contains (`VOCABULARY`),
//! which is what lets the lexical half work on analysts' language at all.

use std::collections::HashMap;

/// BM25's term-frequency saturation and length normalisation.
const K1: f32 = 1.2;
const B: f32 = 0.75;

/// Words too common to tell documents apart.
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been",
    "but", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "how",
    "if", "in", "into", "is", "it", "its", "may", "more", "most", "no", "not", "of", "on", "one",
    "or", "other", "our", "out", "over", "so", "some", "such", "than", "that", "the", "their",
    "them", "then", "there", "these", "they", "this", "those", "to", "up", "use", "used", "using",
    "via", "was", "we", "were", "what", "when", "where", "which", "while", "who", "will", "with",
    "within", "would", "you",
];

/// Network and operations words analysts use, with the ATT&CK for ICS words that name
/// the same behaviour. Keys are matched as stemmed terms or two-term phrases.
const VOCABULARY: &[(&str, &str)] = &[
    ("traversal", "exploit public facing application"),
    ("webshell", "exploit public facing application"),
    ("aspx", "exploit public facing application"),
    ("exploit", "exploitation"),
    ("cve", "exploitation"),
    ("admin admin", "default credentials"),
    ("admin 12345", "default credentials"),
    ("promiscuous", "network sniffing"),
    ("dumpcap", "network sniffing"),
    ("wireshark", "network sniffing"),
    ("tcpdump", "network sniffing"),
    ("span port", "network sniffing"),
    ("capturing", "network sniffing"),
    ("list identity", "remote system information discovery"),
    ("szl", "remote system information discovery"),
    ("order number", "remote system information discovery"),
    ("firmware version", "remote system information discovery"),
    ("product code", "remote system information discovery"),
    ("syn", "remote system discovery"),
    ("socks", "connection proxy"),
    ("relay", "connection proxy"),
    ("forwarding", "connection proxy"),
    ("rundll32", "system binary proxy execution"),
    ("mshta", "system binary proxy execution"),
    ("whitelisting", "system binary proxy execution"),
    ("lolbin", "system binary proxy execution"),
    ("event log", "indicator removal host"),
    ("logs wiped", "indicator removal host"),
    ("cleared", "indicator removal host"),
    ("forged", "spoof reporting message"),
    ("pretending", "spoof reporting message"),
    ("dvd", "autorun image removable media"),
    ("autorun", "autorun image"),
    ("privilege", "exploitation privilege escalation"),
    ("system service", "exploitation privilege escalation"),
    ("library functions", "execution api"),
    ("dll", "execution api"),
    ("sharepoint", "data information repositories"),
    ("repository", "data information repositories"),
    ("drawings", "data information repositories theft operational information"),
    ("diagrams", "data information repositories theft operational information"),
    ("watched", "monitor process state"),
    ("readings", "monitor process state"),
    ("telemetry", "reporting message"),
    ("dropped", "block"),
    ("send commands", "denial control"),
    ("lost comms", "denial view"),
    ("screens", "view"),
    ("dark", "loss view"),
    ("burned", "damage property"),
    ("destroyed", "damage property"),
    ("cardholder", "theft operational information"),
    ("cloud storage", "theft operational information"),
    ("ssh", "remote services ssh"),
    ("telnet", "remote services telnet"),
    ("rdp", "remote services remote desktop"),
    ("vnc", "remote services vnc"),
    ("smb", "remote services smb file share lateral tool transfer"),
    ("teamviewer", "remote services external remote services"),
    ("anydesk", "remote services external remote services"),
    ("vpn", "external remote services"),
    ("jump", "remote services"),
    ("beacon", "command control standard application layer protocol commonly used port"),
    ("callback", "command control standard application layer protocol"),
    ("c2", "command control"),
    ("heartbeat", "command control standard application layer protocol"),
    ("https", "standard application layer protocol commonly used port"),
    ("443", "commonly used port standard application layer protocol"),
    ("80", "commonly used port"),
    ("dns", "standard application layer protocol"),
    ("tunnel", "connection proxy"),
    ("proxy", "connection proxy"),
    ("tor", "connection proxy"),
    ("scan", "remote system discovery network connection enumeration"),
    ("sweep", "remote system discovery"),
    ("swept", "remote system discovery"),
    ("nmap", "remote system discovery network sniffing"),
    ("probe", "remote system discovery"),
    ("enumerate", "remote system information discovery"),
    ("fingerprint", "remote system information discovery"),
    ("modbus", "industrial protocol"),
    ("502", "modbus"),
    ("s7", "industrial protocol"),
    ("s7comm", "industrial protocol"),
    ("102", "s7"),
    ("dnp3", "industrial protocol"),
    ("20000", "dnp3"),
    ("bacnet", "industrial protocol"),
    ("47808", "bacnet"),
    ("enip", "industrial protocol"),
    ("44818", "ethernet ip"),
    ("cip", "industrial protocol"),
    ("opc", "industrial protocol"),
    ("write", "unauthorized command message modify parameter"),
    ("setpoint", "modify parameter manipulation control"),
    ("writeproperty", "unauthorized command message modify parameter"),
    ("baked", "hardcoded credentials"),
    ("hardcoded", "hardcoded credentials"),
    ("backdoor", "hardcoded credentials"),
    ("trips", "safety instrumented system"),
    ("operate", "unauthorized command message"),
    ("reachable", "internet accessible device"),
    ("w3wp", "exploit public facing application"),
    ("malformed", "exploit public facing application"),
    ("service account", "valid accounts"),
    ("iat", "hooking"),
    ("drift", "manipulation view"),
    ("normal values", "manipulation view"),
    ("psexec", "lateral tool transfer remote services"),
    ("admin$", "lateral tool transfer"),
    ("copied", "lateral tool transfer"),
    ("export", "automated collection"),
    ("csv", "automated collection"),
    ("backups", "data destruction loss availability"),
    ("deleted", "data destruction"),
    ("toggling", "brute force io"),
    ("coil", "brute force io"),
    ("unlock", "manipulation control"),
    ("netstat", "command line interface remote system information discovery"),
    ("arp a", "command line interface"),
    ("who is", "remote system discovery"),
    ("readproperty", "remote system information discovery"),
    ("hash", "supply chain compromise"),
    ("stopped getting", "denial view"),
    ("diverted", "loss availability"),
    ("down", "loss availability"),
    ("ladder", "program download modify program"),
    ("logic", "program download modify program"),
    ("project", "program download modify program project file infection"),
    ("upload", "program upload"),
    ("download", "program download"),
    ("firmware", "firmware system firmware module firmware"),
    ("stop", "change operating mode"),
    ("run mode", "change operating mode"),
    ("program mode", "change operating mode"),
    ("exfil", "theft operational information"),
    ("exfiltration", "theft operational information"),
    ("bulk", "theft operational information"),
    ("gb", "theft operational information"),
    ("shodan", "internet accessible device"),
    ("exposed", "internet accessible device"),
    ("internet facing", "internet accessible device"),
    ("port forward", "internet accessible device"),
    ("default password", "default credentials"),
    ("factory password", "default credentials"),
    ("password", "valid accounts credentials"),
    ("login", "valid accounts"),
    ("brute", "brute force valid accounts"),
    ("phish", "spearphishing attachment"),
    ("email", "spearphishing attachment"),
    ("usb", "replication removable media"),
    ("laptop", "transient cyber asset"),
    ("vendor laptop", "transient cyber asset"),
    ("contractor", "transient cyber asset"),
    ("ransomware", "data destruction loss availability loss productivity revenue"),
    ("wiper", "data destruction"),
    ("encrypt", "data encrypted impact"),
    ("hmi", "human machine interface"),
    ("screen", "screen capture"),
    ("spoof", "spoof reporting message"),
    ("fake", "spoof reporting message"),
    ("replay", "spoof reporting message"),
    ("mitm", "adversary middle"),
    ("arp", "adversary middle"),
    ("sniff", "network sniffing"),
    ("pcap", "network sniffing"),
    ("alarm", "alarm suppression"),
    ("safety", "safety instrumented system"),
    ("sis", "safety instrumented system"),
    ("reboot", "device restart shutdown"),
    ("restart", "device restart shutdown"),
    ("dos", "denial service"),
    ("flood", "denial service"),
    ("jam", "block command message denial"),
    ("block", "block reporting message block command message"),
    ("historian", "data historian"),
    ("powershell", "command line interface scripting"),
    ("cmd", "command line interface"),
    ("shell", "command line interface"),
    ("script", "scripting"),
    ("api", "execution native api"),
    ("scheduled", "scheduled task"),
    ("service", "service stop"),
    ("hook", "hooking"),
    ("rootkit", "rootkit"),
    ("wireless", "wireless compromise wireless sniffing"),
    ("wifi", "wireless compromise"),
    ("rogue", "rogue master"),
    ("master", "rogue master"),
    ("watering", "drive compromise"),
    ("supply", "supply chain compromise"),
    ("update", "supply chain compromise system firmware"),
    ("io", "input output image brute force"),
];

/// Lower-cased, stemmed terms of `text`, stopwords dropped.
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let word = word.to_ascii_lowercase();
        if word.len() < 2 || STOPWORDS.contains(&word.as_str()) {
            continue;
        }
        out.push(stem(&word));
    }
    out
}

/// The terms of a query, with the ATT&CK words for the analyst words it contains.
pub fn query_terms(text: &str) -> Vec<String> {
    let (mut words, added) = split_query(text);
    words.extend(added);
    words
}

/// A query's sparse vector: its own terms at weight one, the vocabulary's additions at
/// `EXPANSION_WEIGHT` each, so a word the analyst used outweighs one we inferred.
pub fn query_vector(text: &str) -> Vec<(u32, f32)> {
    let (words, added) = split_query(text);
    weigh(&words, &added)
}

/// The sparse vector of a query already split into its own and its added terms.
pub fn weigh(words: &[String], added: &[String]) -> Vec<(u32, f32)> {
    let mut weights: HashMap<u32, f32> = HashMap::new();
    for term in words {
        *weights.entry(term_index(term)).or_default() += 1.0;
    }
    for term in added {
        *weights.entry(term_index(term)).or_default() += EXPANSION_WEIGHT;
    }
    let mut weights: Vec<(u32, f32)> = weights.into_iter().collect();
    weights.sort_unstable_by_key(|(i, _)| *i);
    weights
}

/// The weight of a term the vocabulary added, against one the analyst wrote.
const EXPANSION_WEIGHT: f32 = 1.0;

/// A query's own terms, and the terms the vocabulary adds for them.
pub fn split_query(text: &str) -> (Vec<String>, Vec<String>) {
    let words = terms(text);
    let mut expanded = Vec::new();
    for (key, adds) in expansions() {
        let hit = match key.as_slice() {
            [one] => words.iter().any(|w| w == one),
            [first, second] => words.windows(2).any(|pair| pair[0] == *first && pair[1] == *second),
            _ => false,
        };
        if hit {
            expanded.extend(adds.iter().cloned());
        }
    }
    (words, expanded)
}

/// The vocabulary with both sides stemmed, once.
fn expansions() -> &'static [(Vec<String>, Vec<String>)] {
    static STEMMED: std::sync::OnceLock<Vec<(Vec<String>, Vec<String>)>> =
        std::sync::OnceLock::new();
    STEMMED.get_or_init(|| VOCABULARY.iter().map(|(key, adds)| (terms(key), terms(adds))).collect())
}

/// A light suffix stripper: enough to meet "scanning"/"scans"/"scanned" at "scan" and
/// "commands"/"command" at "command", without a dictionary.
fn stem(word: &str) -> String {
    if word.len() <= 3 || word.bytes().any(|b| b.is_ascii_digit()) {
        return word.to_string();
    }
    for (suffix, keep) in [
        ("ings", ""),
        ("ing", ""),
        ("ies", "y"),
        ("ied", "y"),
        ("sses", "ss"),
        ("ed", ""),
        ("es", "e"),
        ("s", ""),
    ] {
        if let Some(base) = word.strip_suffix(suffix)
            && base.len() >= 3
            && !(suffix == "s" && (base.ends_with('s') || base.ends_with('u')))
        {
            let mut stemmed = format!("{base}{keep}");
            // "scanned" -> "scann" -> "scan"
            let bytes = stemmed.as_bytes();
            let n = bytes.len();
            if keep.is_empty()
                && n >= 2
                && bytes[n - 1] == bytes[n - 2]
                && !matches!(bytes[n - 1], b'l' | b's' | b'z')
            {
                stemmed.pop();
            }
            return stemmed;
        }
    }
    word.to_string()
}

/// A term's index in a sparse vector: 32-bit FNV-1a of its text, the same in every
/// process and release, so vectors written by one replica are read by another.
pub fn term_index(term: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in term.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// A document's BM25 term weights without IDF: what a Qdrant collection with the IDF
/// modifier multiplies by its own IDF, and what the in-process index stores.
pub fn doc_weights(terms: &[String], avg_len: f32) -> Vec<(u32, f32)> {
    let mut counts: HashMap<u32, f32> = HashMap::new();
    for term in terms {
        *counts.entry(term_index(term)).or_default() += 1.0;
    }
    let len = terms.len() as f32;
    let mut weights: Vec<(u32, f32)> =
        counts.into_iter().map(|(i, tf)| (i, tf_weight(tf, len, avg_len))).collect();
    weights.sort_unstable_by_key(|(i, _)| *i);
    weights
}

/// A query's sparse vector: each distinct term once, weighted by how often it occurs.
pub fn query_weights(terms: &[String]) -> Vec<(u32, f32)> {
    let mut counts: HashMap<u32, f32> = HashMap::new();
    for term in terms {
        *counts.entry(term_index(term)).or_default() += 1.0;
    }
    let mut weights: Vec<(u32, f32)> = counts.into_iter().collect();
    weights.sort_unstable_by_key(|(i, _)| *i);
    weights
}

/// BM25's inverse document frequency of a term found in `df` of `n` documents.
pub fn idf(n: f32, df: f32) -> f32 {
    ((n - df + 0.5) / (df + 0.5) + 1.0).ln()
}

/// BM25's saturated term frequency for a document of `len` terms.
pub fn tf_weight(tf: f32, len: f32, avg_len: f32) -> f32 {
    tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg_len.max(1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_forms_meet_at_one_term() {
        for (a, b) in [
            ("scanning", "scans"),
            ("scanned", "scan"),
            ("commands", "command"),
            ("discovery", "discovery"),
            ("modifies", "modify"),
        ] {
            assert_eq!(stem(a), stem(b), "{a} / {b}");
        }
        assert_eq!(terms("The PLC's S7comm port 102"), ["plc", "s7comm", "port", "102"]);
    }

    #[test]
    fn analyst_words_bring_their_attack_words() {
        let q = query_terms("pump opened an SSH session");
        assert!(q.contains(&"remote".to_string()) && q.contains(&"service".to_string()), "{q:?}");
        let q = query_terms("default password on the camera");
        assert!(q.contains(&"credential".to_string()), "{q:?}");
        // A phrase key needs both words in order.
        let operating = terms("operating").remove(0);
        assert!(query_terms("PLC put in run mode").contains(&operating));
        assert!(!query_terms("mode run").contains(&operating));
    }
}
